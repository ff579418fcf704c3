//! A demo station network: simulated field stations publishing soil readings to the broker.
//!
//! `soilmon simulate` reads a points registry CSV, splits the points between `--stations`
//! stations (`st01`, `st02`, … by default, points dealt round-robin) and publishes station
//! messages on `{prefix}/stations/{station_id}/readings` at QoS1, paced to `--rate` messages
//! per second across all stations, for `--duration` seconds or exactly `--count` messages.
//!
//! # What the messages look like
//!
//! Every message follows the station wire contract (see [`crate::ingest::payload`]):
//!
//! ```json
//! {"msg_id": "st07-1764293400000-000123", "point_id": "441781-R-0003",
//!  "sampled_at": "2026-11-28T09:30:00.000+08:00", "ph": 6.2, "depth_cm": [0, 20],
//!  "method": "XRF", "readings": [{"metal": "Cd", "value": 0.42, "unit": "mg/kg"}, …]}
//! ```
//!
//! - `msg_id` is `{station}-{run_start_unix_ms}-{seq:06}`: unique across runs, `seq` counts
//!   per station from 1.
//! - `sampled_at` is the current time with a `+08:00` offset, millisecond precision, strictly
//!   increasing per point.
//! - `ph` is the point's registered pH ± 0.15, omitted in about 15 % of the samples (and
//!   always when the point has no registered pH, so soilmon judges with the strictest band).
//! - Eight readings per sample (Pb Hg Cd Cr As Cu Zn Ni). Values are chosen against the
//!   thresholds soilmon will apply ([`Standards::thresholds`] for the point's land use and the
//!   pH soilmon will use, i.e. the sample's pH or else the point's):
//!   - normal readings lie at 20–60 % of the screening value (on development land, whose
//!     GB 36600 values are far above natural levels, of the lower of the screening value and
//!     four times a typical background value); metals without a standard on that land (Zn
//!     and total Cr on development land) get a plausible background value;
//!   - in an *exceeding* sample (`--exceed-share` of the good samples) one metal is raised to
//!     1.2–3× its screening value (kept below the intervention value), or in about one
//!     exceeding sample in five to 1.1–1.6× the intervention value where one exists;
//!   - about one sample in ten has one `"detected": false` reading whose value (the method
//!     detection limit) is at most half the screening value, so it never counts as exceeding
//!     nor as undeterminable;
//!   - about one reading in ten is sent in `µg/kg` (value × 1000) instead of `mg/kg`.
//! - A *bad* message (`--bad-share` of all messages) is a normal message with exactly one
//!   defect, the kinds taken in turn from [`BadKind::ALL`]; [`BadKind::expected_code`] is the
//!   [`RejectCode`] soilmon answers it with on `{prefix}/stations/{station_id}/rejects`.
//!
//! Message building is pure and deterministic given the random generator's state
//! ([`make_message`]); `--seed` makes a whole run's content reproducible (timestamps and
//! message ids aside).
//!
//! # Delivery
//!
//! One MQTT 3.1.1 client (`soilmon-sim-<random>`, clean session, credentials from
//! [`MqttConfig`] when a username is set) publishes everything at QoS1; a task polls its event
//! loop and counts PUBACKs. At the end the run waits (at most 30 s) until every publish is
//! acknowledged, then disconnects. A lost connection ends the run with an error rather than
//! silently dropping messages (with a clean session, unacknowledged publishes would not be
//! resent). With `--show-rejects` the client also subscribes to its stations' rejects topics
//! and logs every reject soilmon sends back.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Offset as _, SecondsFormat, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS,
    SubscribeFilter, SubscribeReasonCode,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use crate::config::MqttConfig;
use crate::domain::metal::Metal;
use crate::domain::point::Point;
use crate::domain::standard::{Standards, Thresholds};
use crate::ingest::payload::RejectCode;
use crate::registry::{parse_points_csv, valid_point_id, RegistryError};

/// How long the run waits for the broker's CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the run waits for the SUBACK of the rejects subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the run waits, after the last publish, for the outstanding PUBACKs.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the run keeps listening for rejects after the last PUBACK (`--show-rejects`).
const REJECT_LINGER_MIN: Duration = Duration::from_secs(1);
/// Upper bound of that wait while fewer rejects than bad messages arrived.
const REJECT_LINGER_MAX: Duration = Duration::from_secs(5);
/// Interval of the progress line.
const STATUS_EVERY: Duration = Duration::from_secs(5);
/// The metals every simulated sample carries, in message order.
const SAMPLE_METALS: [Metal; 8] = [
    Metal::Pb,
    Metal::Hg,
    Metal::Cd,
    Metal::Cr,
    Metal::As,
    Metal::Cu,
    Metal::Zn,
    Metal::Ni,
];
/// Offset of the stations' clocks (China Standard Time).
const STATION_OFFSET_SECS: i32 = 8 * 3600;
/// Share of good samples that omit the pH.
const PH_OMITTED_SHARE: f64 = 0.15;
/// Largest pH noise around the registered value.
const PH_NOISE: f64 = 0.15;
/// Share of exceeding samples pushed above the intervention value (where one exists).
const INTERVENTION_SHARE: f64 = 0.2;
/// Share of samples with one below-detection reading.
const UNDETECTED_SHARE: f64 = 0.1;
/// Share of readings sent in µg/kg.
const MICROGRAM_SHARE: f64 = 0.1;

/// Errors of a simulation run.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A command-line value is not acceptable.
    #[error("simulate: --{arg}: {detail}")]
    InvalidArgs {
        /// The option, without its dashes.
        arg: &'static str,
        /// Why it was refused.
        detail: String,
    },
    /// The points file could not be read.
    #[error("simulate: reading {path}: {source}")]
    ReadPoints {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The points file is not a valid registry CSV.
    #[error("simulate: {path}: {source}")]
    Points {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: RegistryError,
    },
    /// The broker did not answer the connection request in time.
    #[error("simulate: no CONNACK from the broker at {host}:{port} within {timeout:?}")]
    ConnectTimeout {
        /// Broker host.
        host: String,
        /// Broker port.
        port: u16,
        /// How long the run waited.
        timeout: Duration,
    },
    /// The MQTT connection failed or was lost (the run does not reconnect: with a clean
    /// session, unacknowledged publishes would be lost silently).
    #[error("simulate: MQTT connection failed after {acked} PUBACKs: {source}")]
    Connection {
        /// PUBACKs received before the failure.
        acked: u64,
        /// Underlying error (boxed: it is large).
        source: Box<ConnectionError>,
    },
    /// The MQTT event-loop task ended unexpectedly.
    #[error("simulate: the MQTT event loop stopped unexpectedly ({detail})")]
    EventLoopStopped {
        /// What is known about why.
        detail: String,
    },
    /// The broker refused, or did not confirm, the subscription to the rejects topics.
    #[error("simulate: subscribing to the rejects topics: {detail}")]
    Subscribe {
        /// What went wrong.
        detail: String,
    },
    /// Not every publish was acknowledged in time at the end of the run.
    #[error(
        "simulate: only {acked} of {published} publishes were acknowledged within {timeout:?}"
    )]
    AckTimeout {
        /// PUBACKs received.
        acked: u64,
        /// Messages published.
        published: u64,
        /// How long the run waited after the last publish.
        timeout: Duration,
    },
}

/// Options of `soilmon simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Points registry CSV the stations sample from.
    #[arg(long, default_value = "config/points/demo.csv")]
    pub points: PathBuf,
    /// Number of stations (each owns a share of the points).
    #[arg(long, default_value_t = 8)]
    pub stations: usize,
    /// Messages per second across all stations.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to run, seconds (ignored when --count is given).
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Publish exactly this many messages, then stop.
    #[arg(long)]
    pub count: Option<u64>,
    /// Share of samples with at least one metal above its screening value.
    #[arg(long, default_value_t = 0.05)]
    pub exceed_share: f64,
    /// Share of deliberately bad messages (malformed JSON, unknown metal, negative value, future timestamp, unknown point, …, cycling through kinds).
    #[arg(long, default_value_t = 0.0)]
    pub bad_share: f64,
    /// Random seed for reproducible runs.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Prefix of station ids (stations are named {prefix}01, {prefix}02, …).
    #[arg(long, default_value = "st")]
    pub station_prefix: String,
    /// Also print the rejects soilmon sends back (subscribes to the stations' rejects topics).
    #[arg(long)]
    pub show_rejects: bool,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    /// Messages published (and acknowledged by the broker).
    pub published: u64,
    /// Of those, good samples with a metal deliberately above its screening value.
    pub exceeding: u64,
    /// Of those, deliberately bad messages.
    pub bad: u64,
    /// Rejects received back from soilmon (only counted with `--show-rejects`).
    pub rejects_received: u64,
    /// Time from the broker's CONNACK to the last PUBACK (and the reject linger, if any).
    pub elapsed: Duration,
}

/// A deliberately bad message: a normal message with exactly one defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadKind {
    /// The JSON text is cut off part-way.
    MalformedJson,
    /// One reading names a metal soilmon does not know (`Sb`).
    UnknownMetal,
    /// One reading has a negative value.
    NegativeValue,
    /// `sampled_at` lies a day in the future.
    FutureTimestamp,
    /// `point_id` is not registered.
    UnknownPoint,
    /// `sampled_at` is absent.
    MissingField,
    /// One reading has an unknown unit (`mg/L`).
    UnknownUnit,
    /// `ph` is 14.6.
    PhOutOfRange,
    /// The first metal appears twice.
    DuplicateMetal,
    /// One reading's value is the string `"NaN"`.
    NonFiniteValue,
    /// One reading is 2 500 000 mg/kg (more than the sample's own mass).
    ImplausibleValue,
    /// `sampled_at` has no UTC offset (`2026-11-28 09:30:00`).
    BadTimestamp,
    /// The payload's `station_id` names another station than the topic.
    StationMismatch,
    /// One reading's value is a number written as a string (`"0.42"`).
    BadType,
}

impl BadKind {
    /// Every kind, in the order a run cycles through them.
    pub const ALL: [BadKind; 14] = [
        BadKind::MalformedJson,
        BadKind::UnknownMetal,
        BadKind::NegativeValue,
        BadKind::FutureTimestamp,
        BadKind::UnknownPoint,
        BadKind::MissingField,
        BadKind::UnknownUnit,
        BadKind::PhOutOfRange,
        BadKind::DuplicateMetal,
        BadKind::NonFiniteValue,
        BadKind::ImplausibleValue,
        BadKind::BadTimestamp,
        BadKind::StationMismatch,
        BadKind::BadType,
    ];

    /// The reason code soilmon refuses this kind of message with.
    pub fn expected_code(self) -> RejectCode {
        match self {
            BadKind::MalformedJson => RejectCode::MalformedJson,
            BadKind::UnknownMetal => RejectCode::UnknownMetal,
            BadKind::NegativeValue => RejectCode::NegativeValue,
            BadKind::FutureTimestamp => RejectCode::FutureTimestamp,
            BadKind::UnknownPoint => RejectCode::UnknownPoint,
            BadKind::MissingField => RejectCode::MissingField,
            BadKind::UnknownUnit => RejectCode::UnknownUnit,
            BadKind::PhOutOfRange => RejectCode::PhOutOfRange,
            BadKind::DuplicateMetal => RejectCode::DuplicateMetal,
            BadKind::NonFiniteValue => RejectCode::NonFiniteValue,
            BadKind::ImplausibleValue => RejectCode::ImplausibleValue,
            BadKind::BadTimestamp => RejectCode::BadTimestamp,
            BadKind::StationMismatch => RejectCode::StationMismatch,
            BadKind::BadType => RejectCode::BadType,
        }
    }
}

/// What kind of message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Every reading below its screening value.
    Normal,
    /// One metal deliberately above its screening value (sometimes its intervention value).
    Exceeding,
    /// A deliberately defective message.
    Bad(BadKind),
}

/// Everything [`make_message`] needs besides the thresholds and the randomness.
#[derive(Debug, Clone, Copy)]
pub struct MessageSpec<'a> {
    /// Topic prefix of the wire contract (`mqtt.topic_prefix`, normally `soil/v1`).
    pub topic_prefix: &'a str,
    /// The publishing station.
    pub station_id: &'a str,
    /// The message id.
    pub msg_id: &'a str,
    /// The sampled point.
    pub point: &'a Point,
    /// The sampling time, as the station reports it.
    pub sampled_at: DateTime<FixedOffset>,
    /// Normal, exceeding or bad.
    pub kind: MessageKind,
}

/// Builds one message (pure; unit-testable): its topic and payload, deterministic given the
/// rng state. See the module documentation for how values are chosen.
pub fn make_message<R: Rng + ?Sized>(
    spec: &MessageSpec<'_>,
    standards: &Standards,
    rng: &mut R,
) -> (String, Vec<u8>) {
    let topic = readings_topic(spec.topic_prefix, spec.station_id);
    let mut body = sample_body(spec, standards, spec.kind == MessageKind::Exceeding, rng);
    let payload = match spec.kind {
        MessageKind::Normal | MessageKind::Exceeding => body.to_string().into_bytes(),
        MessageKind::Bad(kind) => spoil(&mut body, kind, spec, rng),
    };
    (topic, payload)
}

/// The readings topic of a station.
fn readings_topic(prefix: &str, station_id: &str) -> String {
    format!("{prefix}/stations/{station_id}/readings")
}

/// The station clock's offset.
fn station_offset() -> FixedOffset {
    FixedOffset::east_opt(STATION_OFFSET_SECS).unwrap_or(Utc.fix())
}

/// Builds a well-formed sample; with `exceed`, one metal is raised above its screening value.
fn sample_body<R: Rng + ?Sized>(
    spec: &MessageSpec<'_>,
    standards: &Standards,
    exceed: bool,
    rng: &mut R,
) -> Value {
    let point = spec.point;
    let land_use = point.land_use;
    let ph = match point.ph {
        Some(p) if !rng.gen_bool(PH_OMITTED_SHARE) => {
            Some(round_to(p + rng.gen_range(-PH_NOISE..=PH_NOISE), 1).clamp(0.0, 14.0))
        }
        _ => None,
    };
    // soilmon judges with the sample's pH, else the point's (else the strictest band).
    let judged_ph = ph.or(point.ph);
    let thresholds: Vec<(Metal, Option<Thresholds>)> = SAMPLE_METALS
        .iter()
        .map(|&m| (m, standards.thresholds(land_use, judged_ph, m)))
        .collect();

    let raised = if exceed {
        pick_exceedance(&thresholds, rng)
    } else {
        None
    };
    let undetected = if rng.gen_bool(UNDETECTED_SHARE) {
        let candidates: Vec<Metal> = SAMPLE_METALS
            .iter()
            .copied()
            .filter(|m| raised.map(|r| r.0) != Some(*m))
            .collect();
        Some(candidates[rng.gen_range(0..candidates.len())])
    } else {
        None
    };

    let readings: Vec<Value> = thresholds
        .iter()
        .map(|(metal, t)| {
            let metal = *metal;
            let (mgkg, detected) = match raised {
                Some((m, v)) if m == metal => (v, true),
                _ if undetected == Some(metal) => (detection_limit(metal, t.as_ref()), false),
                _ => (normal_value(metal, t.as_ref(), land_use.is_farmland(), rng), true),
            };
            let mut r = if rng.gen_bool(MICROGRAM_SHARE) {
                json!({"metal": metal.symbol(), "value": round_sig(mgkg * 1000.0, 4), "unit": "µg/kg"})
            } else {
                json!({"metal": metal.symbol(), "value": mgkg, "unit": "mg/kg"})
            };
            if !detected {
                r["detected"] = Value::Bool(false);
            }
            r
        })
        .collect();

    let depth = if land_use.is_farmland() {
        [0, 20]
    } else {
        [0, 50]
    };
    let method = if rng.gen_bool(0.7) { "XRF" } else { "ICP-MS" };
    let mut body = json!({
        "msg_id": spec.msg_id,
        "point_id": point.id,
        "sampled_at": spec.sampled_at.to_rfc3339_opts(SecondsFormat::Millis, false),
        "depth_cm": depth,
        "method": method,
        "readings": readings,
    });
    if let Some(ph) = ph {
        body["ph"] = json!(ph);
    }
    body
}

/// Chooses the metal to raise and its value (mg/kg): 1.2–3× screening below intervention, or
/// in [`INTERVENTION_SHARE`] of the cases 1.1–1.6× intervention where one exists.
fn pick_exceedance<R: Rng + ?Sized>(
    thresholds: &[(Metal, Option<Thresholds>)],
    rng: &mut R,
) -> Option<(Metal, f64)> {
    let judged: Vec<(Metal, &Thresholds)> = thresholds
        .iter()
        .filter_map(|(m, t)| t.as_ref().map(|t| (*m, t)))
        .collect();
    let with_intervention: Vec<(Metal, f64)> = judged
        .iter()
        .filter_map(|(m, t)| t.intervention.map(|i| (*m, i)))
        .collect();
    if rng.gen_bool(INTERVENTION_SHARE) && !with_intervention.is_empty() {
        let (metal, i) = with_intervention[rng.gen_range(0..with_intervention.len())];
        return Some((metal, round_sig(i * rng.gen_range(1.1..1.6), 4)));
    }
    if judged.is_empty() {
        return None;
    }
    let (metal, t) = judged[rng.gen_range(0..judged.len())];
    let s = t.screening;
    let low = 1.2 * s;
    let high = match t.intervention {
        Some(i) => (3.0 * s).min(0.95 * i),
        None => 3.0 * s,
    };
    let value = if high > low {
        rng.gen_range(low..high)
    } else {
        match t.intervention {
            // Intervention barely above screening: the midpoint still exceeds screening only.
            Some(i) if i > 1.02 * s => (s + i) / 2.0,
            Some(i) => 1.2 * i,
            None => low,
        }
    };
    Some((metal, round_sig(value, 4)))
}

/// A normal (non-exceeding) value, mg/kg.
fn normal_value<R: Rng + ?Sized>(
    metal: Metal,
    t: Option<&Thresholds>,
    farmland: bool,
    rng: &mut R,
) -> f64 {
    let background = background_mgkg(metal);
    let value = match t {
        Some(t) => {
            let base = if farmland {
                t.screening
            } else {
                t.screening.min(4.0 * background)
            };
            base * rng.gen_range(0.2..=0.6)
        }
        None => background * rng.gen_range(0.6..=1.6),
    };
    round_sig(value, 4)
}

/// The detection limit reported by a below-detection reading, mg/kg: a typical MDL, at most
/// half the screening value.
fn detection_limit(metal: Metal, t: Option<&Thresholds>) -> f64 {
    let typical = typical_mdl_mgkg(metal);
    let mdl = match t {
        Some(t) => typical.min(0.5 * t.screening),
        None => typical,
    };
    round_sig(mdl, 3)
}

/// Approximate natural background content of Guangdong soils, mg/kg (used for metals without
/// a standard on the land, and to keep development-land values realistic).
fn background_mgkg(metal: Metal) -> f64 {
    match metal {
        Metal::Pb => 36.0,
        Metal::Hg => 0.078,
        Metal::Cd => 0.056,
        Metal::Cr => 50.5,
        Metal::Cr6 => 0.5,
        Metal::As => 8.9,
        Metal::Cu => 17.0,
        Metal::Zn => 47.3,
        Metal::Ni => 14.4,
    }
}

/// Typical laboratory method detection limits (ICP-MS / AFS), mg/kg.
fn typical_mdl_mgkg(metal: Metal) -> f64 {
    match metal {
        Metal::Pb => 2.0,
        Metal::Hg => 0.002,
        Metal::Cd => 0.07,
        Metal::Cr => 2.0,
        Metal::Cr6 => 0.5,
        Metal::As => 0.6,
        Metal::Cu => 0.5,
        Metal::Zn => 7.0,
        Metal::Ni => 2.0,
    }
}

/// Introduces exactly one defect of `kind` into a well-formed sample and serialises it.
fn spoil<R: Rng + ?Sized>(
    body: &mut Value,
    kind: BadKind,
    spec: &MessageSpec<'_>,
    rng: &mut R,
) -> Vec<u8> {
    let count = body["readings"].as_array().map_or(0, Vec::len);
    let k = if count > 0 {
        rng.gen_range(0..count)
    } else {
        0
    };
    match kind {
        BadKind::MalformedJson => {
            let text = body.to_string();
            let mut cut = text.len() * 2 / 3;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            return text.as_bytes()[..cut].to_vec();
        }
        BadKind::UnknownMetal => {
            if let Some(r) = reading_mut(body, k) {
                r.insert("metal".into(), json!("Sb"));
            }
        }
        BadKind::NegativeValue => {
            if let Some(r) = reading_mut(body, k) {
                let v = r.get("value").and_then(Value::as_f64).unwrap_or(1.0);
                r.insert("value".into(), json!(-v.abs().max(0.01)));
            }
        }
        BadKind::FutureTimestamp => {
            let at = spec.sampled_at + TimeDelta::days(1);
            body["sampled_at"] = json!(at.to_rfc3339_opts(SecondsFormat::Millis, false));
        }
        BadKind::UnknownPoint => {
            body["point_id"] = json!(format!("{}-X-9999", spec.point.county_code));
        }
        BadKind::MissingField => {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("sampled_at");
            }
        }
        BadKind::UnknownUnit => {
            if let Some(r) = reading_mut(body, k) {
                r.insert("unit".into(), json!("mg/L"));
            }
        }
        BadKind::PhOutOfRange => body["ph"] = json!(14.6),
        BadKind::DuplicateMetal => {
            if let Some(list) = body["readings"].as_array_mut() {
                if let Some(first) = list.first().cloned() {
                    list.push(first);
                }
            }
        }
        BadKind::NonFiniteValue => {
            if let Some(r) = reading_mut(body, k) {
                r.insert("value".into(), json!("NaN"));
            }
        }
        BadKind::ImplausibleValue => {
            if let Some(r) = reading_mut(body, k) {
                r.insert("value".into(), json!(2_500_000.0));
                r.insert("unit".into(), json!("mg/kg"));
            }
        }
        BadKind::BadTimestamp => {
            let naive = spec.sampled_at.format("%Y-%m-%d %H:%M:%S").to_string();
            body["sampled_at"] = json!(naive);
        }
        BadKind::StationMismatch => {
            body["station_id"] = json!(format!("{}-other", spec.station_id));
        }
        BadKind::BadType => {
            if let Some(r) = reading_mut(body, k) {
                let v = r.get("value").and_then(Value::as_f64).unwrap_or(0.42);
                r.insert("value".into(), json!(v.to_string()));
            }
        }
    }
    body.to_string().into_bytes()
}

/// The `k`-th reading object of a sample body.
fn reading_mut(body: &mut Value, k: usize) -> Option<&mut serde_json::Map<String, Value>> {
    body["readings"].get_mut(k).and_then(Value::as_object_mut)
}

/// Rounds to `decimals` decimal places.
fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Rounds to `digits` significant digits, keeping the decimal representation short.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = digits - 1 - magnitude;
    if decimals >= 0 {
        round_to(x, decimals)
    } else {
        let f = 10f64.powi(-decimals);
        (x / f).round() * f
    }
}

/// Checks the command-line values that need no file or network.
fn validate(args: &SimulateArgs) -> Result<(), SimulateError> {
    let invalid = |arg, detail: String| Err(SimulateError::InvalidArgs { arg, detail });
    if args.stations == 0 {
        return invalid("stations", "must be at least 1".into());
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return invalid(
            "rate",
            format!(
                "{} is not a positive number of messages per second",
                args.rate
            ),
        );
    }
    if args.count.is_none() && !(args.duration.is_finite() && args.duration >= 0.0) {
        return invalid(
            "duration",
            format!("{} is not a non-negative number of seconds", args.duration),
        );
    }
    for (arg, share) in [
        ("exceed-share", args.exceed_share),
        ("bad-share", args.bad_share),
    ] {
        if !(0.0..=1.0).contains(&share) {
            return invalid(arg, format!("{share} is not a share between 0 and 1"));
        }
    }
    let last = station_id(&args.station_prefix, args.stations);
    if !valid_point_id(&station_id(&args.station_prefix, 1)) || !valid_point_id(&last) {
        return invalid(
            "station-prefix",
            format!(
                "{:?}: station ids must be letters, digits, '-' and '_' (at most 64)",
                args.station_prefix
            ),
        );
    }
    Ok(())
}

/// The id of station `n` (1-based).
fn station_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:02}")
}

/// One simulated station and its share of the points.
#[derive(Debug)]
struct SimStation {
    id: String,
    points: Vec<SimPoint>,
    cursor: usize,
    seq: u64,
}

/// A point as one station samples it.
#[derive(Debug)]
struct SimPoint {
    point: Point,
    last_sampled: Option<DateTime<FixedOffset>>,
}

/// One planned message.
#[derive(Debug)]
struct Planned {
    topic: String,
    payload: Vec<u8>,
    kind: MessageKind,
}

/// The schedule of a run: which station sends next, about which point, what kind of message.
/// Pure apart from the clock value handed to [`Plan::next`].
#[derive(Debug)]
struct Plan {
    topic_prefix: String,
    run_start_ms: i64,
    exceed_share: f64,
    bad_share: f64,
    stations: Vec<SimStation>,
    next_station: usize,
    next_bad: usize,
    rng: StdRng,
}

impl Plan {
    /// Deals `points` round-robin to the stations.
    fn new(
        args: &SimulateArgs,
        points: Vec<Point>,
        topic_prefix: &str,
        run_start_ms: i64,
    ) -> Result<Plan, SimulateError> {
        if points.len() < args.stations {
            return Err(SimulateError::InvalidArgs {
                arg: "stations",
                detail: format!(
                    "{} stations but only {} points in {}: every station needs a point",
                    args.stations,
                    points.len(),
                    args.points.display()
                ),
            });
        }
        let mut stations: Vec<SimStation> = (1..=args.stations)
            .map(|n| SimStation {
                id: station_id(&args.station_prefix, n),
                points: Vec::new(),
                cursor: 0,
                seq: 0,
            })
            .collect();
        for (i, point) in points.into_iter().enumerate() {
            stations[i % args.stations].points.push(SimPoint {
                point,
                last_sampled: None,
            });
        }
        Ok(Plan {
            topic_prefix: topic_prefix.to_string(),
            run_start_ms,
            exceed_share: args.exceed_share,
            bad_share: args.bad_share,
            stations,
            next_station: 0,
            next_bad: 0,
            rng: StdRng::seed_from_u64(args.seed),
        })
    }

    /// The next message, sampled "now".
    fn next(&mut self, now: DateTime<Utc>, standards: &Standards) -> Planned {
        let kind = if self.rng.gen::<f64>() < self.bad_share {
            let k = BadKind::ALL[self.next_bad % BadKind::ALL.len()];
            self.next_bad += 1;
            MessageKind::Bad(k)
        } else if self.rng.gen::<f64>() < self.exceed_share {
            MessageKind::Exceeding
        } else {
            MessageKind::Normal
        };
        let n = self.stations.len();
        let station = &mut self.stations[self.next_station % n];
        self.next_station = (self.next_station + 1) % n;
        station.seq += 1;
        let msg_id = format!("{}-{}-{:06}", station.id, self.run_start_ms, station.seq);
        let slot = station.cursor % station.points.len();
        station.cursor = (slot + 1) % station.points.len();
        let sim_point = &mut station.points[slot];

        // Millisecond precision, strictly increasing per point.
        let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let mut at = now.with_timezone(&station_offset());
        if let Some(last) = sim_point.last_sampled {
            if at <= last {
                at = last + TimeDelta::milliseconds(1);
            }
        }
        sim_point.last_sampled = Some(at);

        let spec = MessageSpec {
            topic_prefix: &self.topic_prefix,
            station_id: &station.id,
            msg_id: &msg_id,
            point: &sim_point.point,
            sampled_at: at,
            kind,
        };
        let (topic, payload) = make_message(&spec, standards, &mut self.rng);
        Planned {
            topic,
            payload,
            kind,
        }
    }
}

/// What the event-loop task has seen so far.
#[derive(Debug, Clone, Default)]
struct Progress {
    connected: bool,
    acked: u64,
    /// `Some(true)` once the rejects subscription was granted, `Some(false)` if refused.
    subscribed: Option<bool>,
    rejects: u64,
}

/// Aborts the event-loop task when the run ends early.
struct Poller(JoinHandle<Result<(), ConnectionError>>);

impl Drop for Poller {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Polls the MQTT event loop: counts PUBACKs and rejects, reports CONNACK and SUBACK. Ends
/// with `Ok` after the DISCONNECT went out, with the error on any connection failure.
async fn poll_loop(
    mut eventloop: EventLoop,
    progress: watch::Sender<Progress>,
) -> Result<(), ConnectionError> {
    loop {
        match eventloop.poll().await? {
            Event::Incoming(Incoming::ConnAck(_)) => progress.send_modify(|p| p.connected = true),
            Event::Incoming(Incoming::PubAck(_)) => progress.send_modify(|p| p.acked += 1),
            Event::Incoming(Incoming::SubAck(ack)) => {
                let granted = ack
                    .return_codes
                    .iter()
                    .all(|c| !matches!(c, SubscribeReasonCode::Failure));
                progress.send_modify(|p| p.subscribed = Some(granted));
            }
            Event::Incoming(Incoming::Publish(p)) => {
                info!(
                    topic = %p.topic,
                    "simulate: reject: {}",
                    String::from_utf8_lossy(&p.payload)
                );
                progress.send_modify(|p| p.rejects += 1);
            }
            Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
            _ => {}
        }
    }
}

/// The error to report once the event-loop task has ended.
fn poller_failure(
    outcome: Result<Result<(), ConnectionError>, JoinError>,
    acked: u64,
) -> SimulateError {
    match outcome {
        Ok(Err(source)) => SimulateError::Connection {
            acked,
            source: Box::new(source),
        },
        Ok(Ok(())) => SimulateError::EventLoopStopped {
            detail: "it disconnected before the run ended".into(),
        },
        Err(e) => SimulateError::EventLoopStopped {
            detail: e.to_string(),
        },
    }
}

/// Waits until `pred` holds for the progress, at most `limit`. `Ok(None)` on timeout; an
/// error if the event-loop task ended meanwhile.
async fn wait_until(
    rx: &mut watch::Receiver<Progress>,
    poller: &mut Poller,
    limit: Duration,
    pred: impl FnMut(&Progress) -> bool,
) -> Result<Option<Progress>, SimulateError> {
    let waited = tokio::time::timeout(limit, rx.wait_for(pred))
        .await
        .map(|r| r.map(|p| p.clone()));
    match waited {
        Ok(Ok(p)) => Ok(Some(p)),
        Ok(Err(_closed)) => {
            let acked = rx.borrow().acked;
            Err(poller_failure((&mut poller.0).await, acked))
        }
        Err(_elapsed) => Ok(None),
    }
}

/// Counters of the publishing loop.
#[derive(Debug, Default)]
struct Counts {
    published: u64,
    exceeding: u64,
    bad: u64,
}

/// Runs the simulated station network against the broker in `mqtt` until `--count` messages
/// were published or `--duration` elapsed, waits for every PUBACK and returns what it did.
pub async fn run(
    args: &SimulateArgs,
    mqtt: &MqttConfig,
    standards: &Standards,
    counties: &[String],
) -> Result<SimReport, SimulateError> {
    validate(args)?;
    let text = tokio::fs::read(&args.points)
        .await
        .map_err(|source| SimulateError::ReadPoints {
            path: args.points.clone(),
            source,
        })?;
    let points =
        parse_points_csv(text.as_slice(), counties).map_err(|source| SimulateError::Points {
            path: args.points.clone(),
            source,
        })?;
    let run_start_ms = Utc::now().timestamp_millis();
    let mut plan = Plan::new(args, points, &mqtt.topic_prefix, run_start_ms)?;
    let period = Duration::try_from_secs_f64(1.0 / args.rate)
        .map_err(|e| SimulateError::InvalidArgs {
            arg: "rate",
            detail: format!("{}: {e}", args.rate),
        })?
        .max(Duration::from_micros(1));
    let run_for = match args.count {
        Some(_) => None,
        None => Some(Duration::try_from_secs_f64(args.duration).map_err(|e| {
            SimulateError::InvalidArgs {
                arg: "duration",
                detail: format!("{}: {e}", args.duration),
            }
        })?),
    };

    let client_id = format!("soilmon-sim-{:08x}", rand::random::<u32>());
    let mut opts = MqttOptions::new(client_id.clone(), mqtt.host.clone(), mqtt.port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(mqtt.keep_alive_secs.min(65_535)))
        .set_max_packet_size(mqtt.max_packet_bytes, mqtt.max_packet_bytes);
    if !mqtt.username.is_empty() {
        opts.set_credentials(mqtt.username.clone(), mqtt.password.clone());
    }
    if let Some(tls) = &mqtt.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    // Room for about two seconds of publishes; `publish().await` applies back-pressure beyond.
    let capacity = ((args.rate * 2.0).ceil() as usize).clamp(256, 65_536);
    let (client, eventloop) = AsyncClient::new(opts, capacity);
    let (progress_tx, mut progress_rx) = watch::channel(Progress::default());
    let mut poller = Poller(tokio::spawn(poll_loop(eventloop, progress_tx)));

    if wait_until(&mut progress_rx, &mut poller, CONNECT_TIMEOUT, |p| {
        p.connected
    })
    .await?
    .is_none()
    {
        return Err(SimulateError::ConnectTimeout {
            host: mqtt.host.clone(),
            port: mqtt.port,
            timeout: CONNECT_TIMEOUT,
        });
    }
    info!(
        client_id,
        broker = %format!("{}:{}", mqtt.host, mqtt.port),
        stations = plan.stations.len(),
        rate = args.rate,
        "simulate: connected"
    );

    if args.show_rejects {
        let filters: Vec<SubscribeFilter> = plan
            .stations
            .iter()
            .map(|s| SubscribeFilter::new(mqtt.rejects_topic(&s.id), QoS::AtLeastOnce))
            .collect();
        if client.subscribe_many(filters).await.is_err() {
            let acked = progress_rx.borrow().acked;
            return Err(poller_failure((&mut poller.0).await, acked));
        }
        let granted = wait_until(&mut progress_rx, &mut poller, SUBSCRIBE_TIMEOUT, |p| {
            p.subscribed.is_some()
        })
        .await?;
        match granted.and_then(|p| p.subscribed) {
            Some(true) => {}
            Some(false) => {
                return Err(SimulateError::Subscribe {
                    detail: "the broker refused it".into(),
                })
            }
            None => {
                return Err(SimulateError::Subscribe {
                    detail: format!("no SUBACK within {SUBSCRIBE_TIMEOUT:?}"),
                })
            }
        }
    }

    let started = Instant::now();
    let deadline = run_for.map(|d| started + d);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut status = tokio::time::interval_at(started + STATUS_EVERY, STATUS_EVERY);
    let mut counts = Counts::default();
    loop {
        if args.count.is_some_and(|c| counts.published >= c) {
            break;
        }
        tokio::select! {
            biased;
            outcome = &mut poller.0 => {
                return Err(poller_failure(outcome, progress_rx.borrow().acked));
            }
            _ = sleep_until_opt(deadline) => break,
            _ = status.tick() => {
                info!(
                    published = counts.published,
                    exceeding = counts.exceeding,
                    bad = counts.bad,
                    acked = progress_rx.borrow().acked,
                    "simulate: progress"
                );
                continue;
            }
            _ = ticks.tick() => {}
        }
        let planned = plan.next(Utc::now(), standards);
        let sent = tokio::select! {
            biased;
            outcome = &mut poller.0 => {
                return Err(poller_failure(outcome, progress_rx.borrow().acked));
            }
            r = client.publish(planned.topic, QoS::AtLeastOnce, false, planned.payload) => r,
        };
        if sent.is_err() {
            let acked = progress_rx.borrow().acked;
            return Err(poller_failure((&mut poller.0).await, acked));
        }
        counts.published += 1;
        match planned.kind {
            MessageKind::Normal => {}
            MessageKind::Exceeding => counts.exceeding += 1,
            MessageKind::Bad(_) => counts.bad += 1,
        }
    }

    let published = counts.published;
    let all_acked = wait_until(&mut progress_rx, &mut poller, ACK_TIMEOUT, |p| {
        p.acked >= published
    })
    .await?;
    if all_acked.is_none() {
        return Err(SimulateError::AckTimeout {
            acked: progress_rx.borrow().acked,
            published,
            timeout: ACK_TIMEOUT,
        });
    }

    if args.show_rejects {
        tokio::time::sleep(REJECT_LINGER_MIN).await;
        let bad = counts.bad;
        let answered = wait_until(
            &mut progress_rx,
            &mut poller,
            REJECT_LINGER_MAX.saturating_sub(REJECT_LINGER_MIN),
            |p| p.rejects >= bad,
        )
        .await?;
        if answered.is_none() {
            warn!(
                bad,
                rejects = progress_rx.borrow().rejects,
                "simulate: not every bad message has been answered yet (is soilmon running?)"
            );
        }
    }
    let elapsed = started.elapsed();
    let rejects_received = progress_rx.borrow().rejects;

    // Orderly DISCONNECT, bounded; every publish is acknowledged already.
    if client.disconnect().await.is_ok() {
        match tokio::time::timeout(Duration::from_secs(5), &mut poller.0).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "simulate: error while disconnecting"),
            Ok(Err(e)) => warn!(error = %e, "simulate: event loop task failed"),
            Err(_) => warn!("simulate: DISCONNECT not sent within 5 s"),
        }
    }

    let report = SimReport {
        published,
        exceeding: counts.exceeding,
        bad: counts.bad,
        rejects_received,
        elapsed,
    };
    info!(
        published = report.published,
        exceeding = report.exceeding,
        bad = report.bad,
        rejects_received = report.rejects_received,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "simulate: done"
    );
    Ok(report)
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use super::*;
    use crate::config::Settings;
    use crate::domain::judge::{judge, Level};
    use crate::ingest::payload::{parse, Sample};
    use crate::registry::Registry;

    struct Fixture {
        settings: Settings,
        standards: Standards,
        points: Vec<Point>,
        registry: Registry,
    }

    fn fixture() -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let settings = Settings::load(&root.join("config/default.toml")).unwrap();
        let standards = settings.standards().unwrap();
        let csv = std::fs::read(root.join("config/points/demo.csv")).unwrap();
        let points = parse_points_csv(csv.as_slice(), &settings.registry.counties).unwrap();
        let registry = Registry::new(points.clone());
        Fixture {
            settings,
            standards,
            points,
            registry,
        }
    }

    fn build(
        f: &Fixture,
        point: &Point,
        kind: MessageKind,
        rng: &mut StdRng,
    ) -> (String, Vec<u8>, DateTime<Utc>) {
        let now = Utc::now();
        let spec = MessageSpec {
            topic_prefix: "soil/v1",
            station_id: "st03",
            msg_id: "st03-1764293400000-000042",
            point,
            sampled_at: now.with_timezone(&station_offset()),
            kind,
        };
        let (topic, payload) = make_message(&spec, &f.standards, rng);
        (topic, payload, now)
    }

    fn levels(f: &Fixture, point: &Point, sample: &Sample) -> Vec<Level> {
        sample
            .readings
            .iter()
            .map(|r| {
                judge(
                    &f.standards,
                    point.land_use,
                    sample.ph.or(point.ph),
                    r.metal,
                    r.value_mgkg,
                    r.detected,
                )
                .level
            })
            .collect()
    }

    #[test]
    fn normal_messages_parse_and_do_not_exceed() {
        let f = fixture();
        let mut rng = StdRng::seed_from_u64(7);
        let mut saw_ug = false;
        let mut saw_undetected = false;
        let mut saw_no_ph = false;
        for point in &f.points {
            for _ in 0..40 {
                let (topic, payload, now) = build(&f, point, MessageKind::Normal, &mut rng);
                assert_eq!(topic, "soil/v1/stations/st03/readings");
                let sample = parse("st03", &payload, now, &f.settings.ingest, &f.registry)
                    .unwrap_or_else(|r| panic!("{r:?}: {}", String::from_utf8_lossy(&payload)));
                assert_eq!(sample.msg_id, "st03-1764293400000-000042");
                assert_eq!(sample.point_id, point.id);
                assert_eq!(sample.readings.len(), 8);
                saw_ug |= sample.readings.iter().any(|r| r.unit_orig == "µg/kg");
                saw_undetected |= sample.readings.iter().any(|r| !r.detected);
                saw_no_ph |= sample.ph.is_none();
                for (r, level) in sample.readings.iter().zip(levels(&f, point, &sample)) {
                    assert!(
                        matches!(level, Level::None | Level::NoStandard),
                        "{} {} {:?}: {level} in {}",
                        point.id,
                        r.metal,
                        r.value_mgkg,
                        String::from_utf8_lossy(&payload)
                    );
                }
            }
        }
        assert!(saw_ug && saw_undetected && saw_no_ph);
    }

    #[test]
    fn exceeding_messages_exceed() {
        let f = fixture();
        let mut rng = StdRng::seed_from_u64(11);
        let mut intervention = 0;
        let mut total = 0;
        for point in &f.points {
            for _ in 0..20 {
                let (_, payload, now) = build(&f, point, MessageKind::Exceeding, &mut rng);
                let sample = parse("st03", &payload, now, &f.settings.ingest, &f.registry).unwrap();
                let levels = levels(&f, point, &sample);
                let exceeding = levels.iter().filter(|l| l.exceeds()).count();
                assert_eq!(
                    exceeding,
                    1,
                    "{}: {levels:?} in {}",
                    point.id,
                    String::from_utf8_lossy(&payload)
                );
                assert!(!levels.contains(&Level::Undeterminable));
                total += 1;
                if levels.contains(&Level::Intervention) {
                    intervention += 1;
                }
            }
        }
        let share = intervention as f64 / total as f64;
        assert!((0.1..0.3).contains(&share), "intervention share {share}");
    }

    #[test]
    fn bad_messages_are_refused_with_their_code() {
        let f = fixture();
        let mut rng = StdRng::seed_from_u64(3);
        for kind in BadKind::ALL {
            for point in &f.points {
                let (_, payload, now) = build(&f, point, MessageKind::Bad(kind), &mut rng);
                let rejection = parse("st03", &payload, now, &f.settings.ingest, &f.registry)
                    .expect_err(&format!("{kind:?} accepted"));
                assert_eq!(
                    rejection.code,
                    kind.expected_code(),
                    "{kind:?}: {} for {}",
                    rejection.detail,
                    String::from_utf8_lossy(&payload)
                );
            }
        }
    }

    #[test]
    fn messages_are_deterministic_given_the_seed() {
        let f = fixture();
        let spec = MessageSpec {
            topic_prefix: "soil/v1",
            station_id: "st01",
            msg_id: "st01-1-000001",
            point: &f.points[0],
            sampled_at: Utc::now().with_timezone(&station_offset()),
            kind: MessageKind::Exceeding,
        };
        let a = make_message(&spec, &f.standards, &mut StdRng::seed_from_u64(5));
        let b = make_message(&spec, &f.standards, &mut StdRng::seed_from_u64(5));
        assert_eq!(a, b);
    }

    fn args() -> SimulateArgs {
        SimulateArgs {
            points: PathBuf::from("config/points/demo.csv"),
            stations: 8,
            rate: 20.0,
            duration: 30.0,
            count: None,
            exceed_share: 0.05,
            bad_share: 0.0,
            seed: 1,
            station_prefix: "st".into(),
            show_rejects: false,
        }
    }

    #[test]
    fn plan_deals_points_and_keeps_ids_unique_and_times_increasing() {
        let f = fixture();
        let mut a = args();
        a.exceed_share = 0.3;
        a.bad_share = 0.2;
        let mut plan = Plan::new(&a, f.points.clone(), "soil/v1", 1_764_293_400_000).unwrap();
        assert_eq!(plan.stations.len(), 8);
        assert_eq!(plan.stations[0].id, "st01");
        assert_eq!(
            plan.stations.iter().map(|s| s.points.len()).sum::<usize>(),
            f.points.len()
        );
        let now = Utc::now();
        let mut ids = HashSet::new();
        let mut last: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut kinds: HashMap<&'static str, usize> = HashMap::new();
        let mut bad_seen = HashSet::new();
        for _ in 0..2000 {
            // A frozen clock: timestamps must still increase per point.
            let planned = plan.next(now, &f.standards);
            let station = planned
                .topic
                .strip_prefix("soil/v1/stations/")
                .and_then(|t| t.strip_suffix("/readings"))
                .unwrap()
                .to_string();
            let label = match planned.kind {
                MessageKind::Normal => "normal",
                MessageKind::Exceeding => "exceeding",
                MessageKind::Bad(k) => {
                    bad_seen.insert(k);
                    "bad"
                }
            };
            *kinds.entry(label).or_default() += 1;
            if matches!(planned.kind, MessageKind::Bad(_)) {
                continue;
            }
            let sample = parse(
                &station,
                &planned.payload,
                now + TimeDelta::seconds(10),
                &f.settings.ingest,
                &f.registry,
            )
            .unwrap();
            assert!(sample
                .msg_id
                .starts_with(&format!("{station}-1764293400000-")));
            assert!(ids.insert(sample.msg_id.clone()), "{}", sample.msg_id);
            if let Some(prev) = last.insert(sample.point_id.clone(), sample.sampled_at) {
                assert!(sample.sampled_at > prev);
            }
        }
        assert_eq!(bad_seen.len(), BadKind::ALL.len());
        let bad = kinds["bad"] as f64 / 2000.0;
        assert!((0.15..0.25).contains(&bad), "bad share {bad}");
        let exceeding = kinds["exceeding"] as f64 / (2000.0 - kinds["bad"] as f64);
        assert!(
            (0.25..0.35).contains(&exceeding),
            "exceed share {exceeding}"
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(validate(&args()).is_ok());
        let cases: Vec<(&str, SimulateArgs)> = vec![
            (
                "stations",
                SimulateArgs {
                    stations: 0,
                    ..args()
                },
            ),
            (
                "rate",
                SimulateArgs {
                    rate: 0.0,
                    ..args()
                },
            ),
            (
                "rate",
                SimulateArgs {
                    rate: -3.0,
                    ..args()
                },
            ),
            (
                "rate",
                SimulateArgs {
                    rate: f64::NAN,
                    ..args()
                },
            ),
            (
                "exceed-share",
                SimulateArgs {
                    exceed_share: 1.5,
                    ..args()
                },
            ),
            (
                "bad-share",
                SimulateArgs {
                    bad_share: -0.1,
                    ..args()
                },
            ),
            (
                "duration",
                SimulateArgs {
                    duration: -1.0,
                    ..args()
                },
            ),
            (
                "station-prefix",
                SimulateArgs {
                    station_prefix: "a/b".into(),
                    ..args()
                },
            ),
        ];
        for (arg, a) in cases {
            match validate(&a) {
                Err(SimulateError::InvalidArgs { arg: got, .. }) => assert_eq!(got, arg),
                other => panic!("{arg}: {other:?}"),
            }
        }
        // --count makes --duration irrelevant.
        assert!(validate(&SimulateArgs {
            duration: -1.0,
            count: Some(3),
            ..args()
        })
        .is_ok());
        // More stations than points.
        let f = fixture();
        let many = SimulateArgs {
            stations: f.points.len() + 1,
            ..args()
        };
        assert!(matches!(
            Plan::new(&many, f.points.clone(), "soil/v1", 0),
            Err(SimulateError::InvalidArgs {
                arg: "stations",
                ..
            })
        ));
    }

    #[test]
    fn rounding_keeps_significant_digits() {
        assert_eq!(round_sig(0.123456, 4), 0.1235);
        assert_eq!(round_sig(123456.0, 3), 123000.0);
        assert_eq!(round_sig(42.0, 4), 42.0);
        assert_eq!(round_to(6.149, 1), 6.1);
    }
}
