//! The simulator's pure message generation, shared by `soilmon simulate` (the demo station
//! network, [`super::publish`]) and the `soilmon-bench` load generator: the kinds of message
//! ([`MessageKind`], [`BadKind`]), one message from its [`MessageSpec`] ([`make_message`]),
//! the value picking against the thresholds, the sampling time ([`sampling_time`]), the
//! choice of kind ([`pick_kind`]) and the schedule of a simulated run (which station sends
//! next, about which point). No I/O, no MQTT, no clock: the caller hands in the time and the
//! random generator. What the messages look like is described in the [`crate::simulate`]
//! module documentation.

use chrono::{DateTime, FixedOffset, Offset as _, SecondsFormat, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::{SimulateArgs, SimulateError};
use crate::domain::metal::Metal;
use crate::domain::point::Point;
use crate::domain::sample::RejectCode;
use crate::domain::standard::{Standards, Thresholds};

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

/// The station clock's offset (China Standard Time, `+08:00`).
pub fn station_offset() -> FixedOffset {
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
pub(super) fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

/// Rounds to `digits` significant digits, keeping the decimal representation short.
pub(super) fn round_sig(x: f64, digits: i32) -> f64 {
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

/// The sampling time a station reports for a sample taken `now`: millisecond precision, in
/// the station clock's offset, and strictly later than `last` (the previous sample of the
/// same point), so that two samples of one point never share a time even with a frozen or
/// coarse clock.
pub fn sampling_time(
    now: DateTime<Utc>,
    last: Option<DateTime<FixedOffset>>,
) -> DateTime<FixedOffset> {
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let at = now.with_timezone(&station_offset());
    match last {
        Some(last) if at <= last => last + TimeDelta::milliseconds(1),
        _ => at,
    }
}

/// Chooses the kind of the next message: bad with probability `bad_share` (the kinds of
/// [`BadKind::ALL`] in turn, `next_bad` counting them), else exceeding with probability
/// `exceed_share`, else normal. Draws two numbers from `rng` (one when the message is bad).
pub fn pick_kind<R: Rng + ?Sized>(
    rng: &mut R,
    exceed_share: f64,
    bad_share: f64,
    next_bad: &mut usize,
) -> MessageKind {
    if rng.gen::<f64>() < bad_share {
        let k = BadKind::ALL[*next_bad % BadKind::ALL.len()];
        *next_bad += 1;
        MessageKind::Bad(k)
    } else if rng.gen::<f64>() < exceed_share {
        MessageKind::Exceeding
    } else {
        MessageKind::Normal
    }
}

/// The id of station `n` (1-based).
pub(super) fn station_id(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:02}")
}

/// One simulated station and its share of the points.
#[derive(Debug)]
pub(super) struct SimStation {
    /// Station id (its topic level).
    pub(super) id: String,
    /// The points it samples, in turn.
    pub(super) points: Vec<SimPoint>,
    cursor: usize,
    seq: u64,
}

/// A point as one station samples it.
#[derive(Debug)]
pub(super) struct SimPoint {
    point: Point,
    last_sampled: Option<DateTime<FixedOffset>>,
}

/// One planned message.
#[derive(Debug)]
pub(super) struct Planned {
    /// Readings topic of the station.
    pub(super) topic: String,
    /// The payload.
    pub(super) payload: Vec<u8>,
    /// What kind of message it is.
    pub(super) kind: MessageKind,
}

/// The schedule of a run: which station sends next, about which point, what kind of message.
/// Pure apart from the clock value handed to [`Plan::next`].
#[derive(Debug)]
pub(super) struct Plan {
    topic_prefix: String,
    run_start_ms: i64,
    exceed_share: f64,
    bad_share: f64,
    /// The stations and their points.
    pub(super) stations: Vec<SimStation>,
    next_station: usize,
    next_bad: usize,
    rng: StdRng,
}

impl Plan {
    /// Deals `points` round-robin to the stations.
    pub(super) fn new(
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
    pub(super) fn next(&mut self, now: DateTime<Utc>, standards: &Standards) -> Planned {
        let kind = pick_kind(
            &mut self.rng,
            self.exceed_share,
            self.bad_share,
            &mut self.next_bad,
        );
        let n = self.stations.len();
        let station = &mut self.stations[self.next_station % n];
        self.next_station = (self.next_station + 1) % n;
        station.seq += 1;
        let msg_id = format!("{}-{}-{:06}", station.id, self.run_start_ms, station.seq);
        let slot = station.cursor % station.points.len();
        station.cursor = (slot + 1) % station.points.len();
        let sim_point = &mut station.points[slot];

        let at = sampling_time(now, sim_point.last_sampled);
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
