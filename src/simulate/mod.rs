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
//! # Files
//!
//! - [`generate`] — the pure message generation (message kinds and specs, [`make_message`],
//!   the bad kinds, value picking, sampling times, the run's schedule): no I/O, no MQTT. The
//!   `soilmon-bench` load generator builds its messages with it too.
//! - [`publish`] — the run itself: MQTT client, pacing, PUBACKs, rejects ([`run`]).
//! - this file — the options ([`SimulateArgs`]), their checks, the errors and the report.
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

pub mod generate;
pub mod publish;

use std::path::PathBuf;
use std::time::Duration;

use rumqttc::ConnectionError;

use crate::domain::rules::valid_point_id;
use crate::registry::RegistryError;

pub use generate::{make_message, BadKind, MessageKind, MessageSpec};
pub use publish::run;

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
    let last = generate::station_id(&args.station_prefix, args.stations);
    if !valid_point_id(&generate::station_id(&args.station_prefix, 1)) || !valid_point_id(&last) {
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use chrono::{DateTime, TimeDelta, Utc};
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::generate::*;
    use super::*;
    use crate::config::Settings;
    use crate::domain::judge::{judge, Level};
    use crate::domain::point::Point;
    use crate::domain::sample::Sample;
    use crate::domain::standard::Standards;
    use crate::ingest::payload::parse;
    use crate::registry::{parse_points_csv, Registry};

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
