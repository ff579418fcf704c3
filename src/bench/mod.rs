//! `soilmon bench`: a reproducible end-to-end benchmark against the physical limits of
//! soilmon's own parts, measured in the same run on the same machine.
//!
//! The bench starts **its own** services so that it never disturbs the development broker or
//! database: a private mosquitto on a free loopback port (config, persistence and log in a
//! temp dir; `max_queued_messages` above the backlog, `max_inflight_messages 1000`) and a
//! fresh database `soilmon_bench_<unix time>` on the local cluster named by
//! `database.url`, dropped at the end. The soilmon under test is this very binary
//! (`std::env::current_exe()` + `run`), started as a child process with
//! `SOILMON__DATABASE__URL` / `SOILMON__MQTT__PORT` / client-id overrides.
//!
//! Phases, in order:
//!
//! 1. **Limits** ([`limits`]): the broker limit (a bare rumqttc subscriber with a persistent
//!    session drains the queued backlog, acking on receipt, storing nothing) and the database
//!    limit (the same N × 8 readings written by binary COPY into a hypertable created
//!    `LIKE readings INCLUDING ALL`, in committed chunks).
//! 2. **Drain** ([`drain`]): the same backlog, queued for soilmon's persistent session while it
//!    was stopped; soilmon is started and timed until `messages` holds every message. Acks are
//!    then verified: soilmon is stopped with SIGTERM and a bare client resuming its session
//!    must receive **no** redelivery.
//! 3. **Alert latency** ([`latency`]): steady publishing at `--rate` with 5 % exceeding
//!    samples; the time from a station's publish to the alert naming that `msg_id` reaching a
//!    bureau subscriber.
//! 4. **Lab upload** ([`lab`]): a valid `--lab-rows` batch (samples with the duplicates and
//!    blanks the configured QC rates require) posted with the bench's `lab` token to
//!    `POST /v1/lab/batches` of a fresh soilmon, timed from the request start to the 201.
//! 5. **Resources** ([`resources`]): peak RSS (`VmHWM`) and CPU seconds of the soilmon process
//!    in each phase (a fresh process per phase).
//!
//! The result is printed as a table and written as JSON (`--json-out`). Nothing here is run
//! by `cargo test` except the pure helpers' unit tests.

pub mod drain;
pub mod lab;
pub mod latency;
pub mod limits;
pub mod load;
pub mod resources;
pub mod services;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;

/// Errors of a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value is not acceptable.
    #[error("bench: {0}")]
    Args(String),
    /// A file or process operation failed.
    #[error("bench: {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A database operation failed.
    #[error("bench: database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// An MQTT client could not queue a request.
    #[error("bench: mqtt: {0}")]
    MqttClient(#[from] rumqttc::ClientError),
    /// An MQTT connection failed.
    #[error("bench: mqtt connection: {0}")]
    MqttConnection(String),
    /// A service did not behave as expected (did not start, timed out, …).
    #[error("bench: {0}")]
    Service(String),
    /// The configuration or the points file could not be loaded.
    #[error("bench: {0}")]
    Setup(String),
    /// A correctness check failed (lost or duplicated data).
    #[error("bench: check failed: {0}")]
    Check(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

/// Options of `soilmon bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Station messages in the backlog (each carries 8 readings).
    #[arg(long, default_value_t = 200_000)]
    pub messages: usize,
    /// Publish rate of the alert-latency phase, messages per second.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Duration of the alert-latency phase, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub latency_seconds: f64,
    /// Share of exceeding samples (backlog and latency phase).
    #[arg(long, default_value_t = 0.05)]
    pub exceed_share: f64,
    /// Rows of the lab batch.
    #[arg(long, default_value_t = 100_000)]
    pub lab_rows: usize,
    /// Readings per binary COPY transaction in the database-limit measurement.
    #[arg(long, default_value_t = 40_000)]
    pub copy_chunk: usize,
    /// Points registry the simulated stations sample from (imported into the bench database).
    #[arg(long, default_value = "config/points/demo.csv")]
    pub points: PathBuf,
    /// Write the results as JSON to this file.
    #[arg(long, default_value = "target/bench/bench.json")]
    pub json_out: PathBuf,
    /// Skip the broker and COPY limits (fractions are then not computed).
    #[arg(long)]
    pub skip_limits: bool,
    /// Skip the backlog drain.
    #[arg(long)]
    pub skip_drain: bool,
    /// Skip the alert-latency phase.
    #[arg(long)]
    pub skip_latency: bool,
    /// Skip the lab-upload phase.
    #[arg(long)]
    pub skip_lab: bool,
    /// Keep the bench database (for inspection) instead of dropping it.
    #[arg(long)]
    pub keep_db: bool,
    /// mosquitto executable.
    #[arg(long, env = "SOILMON_MOSQUITTO", default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Extra environment overrides for the soilmon under test, KEY=VALUE (repeatable), e.g.
    /// `--soilmon-env SOILMON__INGEST__BATCH_MAX=1000`.
    #[arg(long = "soilmon-env")]
    pub soilmon_env: Vec<String>,
}

/// Peak memory and CPU of the soilmon process during one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resources {
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Throughput of one measured run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Throughput {
    /// Items (messages or rows).
    pub items: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Items per second.
    pub per_second: f64,
}

impl Throughput {
    /// `items` in `elapsed`.
    pub fn new(items: u64, elapsed: Duration) -> Throughput {
        let seconds = elapsed.as_secs_f64();
        Throughput {
            items,
            seconds,
            per_second: if seconds > 0.0 {
                items as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

/// Result of the drain phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrainResult {
    /// Messages drained (N).
    pub messages: u64,
    /// Readings committed (N × 8).
    pub readings: Throughput,
    /// Messages per second.
    pub messages_per_second: f64,
    /// Seconds from spawning soilmon to `ready: subscribed`.
    pub startup_seconds: f64,
    /// Messages redelivered to soilmon's session after it was stopped (must be 0: every
    /// message was acked).
    pub redelivered_after_stop: u64,
    /// Resources of the soilmon process.
    pub resources: Resources,
}

/// Result of the alert-latency phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyResult {
    /// Target publish rate, messages/s.
    pub target_rate: f64,
    /// Achieved publish rate, messages/s.
    pub achieved_rate: f64,
    /// Messages published.
    pub published: u64,
    /// Alerts received by the bureau subscriber and matched to a publish.
    pub alerts: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Resources of the soilmon process.
    pub resources: Resources,
}

/// Result of the lab-upload phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LabResult {
    /// The phase did not run.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The batch was uploaded (201).
    Done {
        /// Rows and time (request start to 201).
        rows: Throughput,
        /// Size of the CSV body, bytes.
        bytes: u64,
        /// Server side: reading the body, parsing and checking, ms (from its log).
        server_check_ms: Option<u64>,
        /// Server side: the store transaction up to COMMIT, ms (from its log).
        server_store_ms: Option<u64>,
        /// Of which: binary COPY of every row into `lab_rows`, ms.
        copy_ms: Option<u64>,
        /// Of which: inserting the field samples into `readings`, ms.
        readings_ms: Option<u64>,
        /// Resources of the soilmon process.
        resources: Resources,
    },
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Machine description (CPU model, cores, memory).
    pub machine: Machine,
    /// Backlog size, messages.
    pub messages: u64,
    /// Broker limit: messages drained by a bare subscriber.
    pub broker_limit: Option<Throughput>,
    /// Database limit: readings written by binary COPY.
    pub copy_limit: Option<Throughput>,
    /// soilmon end to end.
    pub drain: Option<DrainResult>,
    /// Alert latency.
    pub latency: Option<LatencyResult>,
    /// Lab upload.
    pub lab: Option<LabResult>,
}

/// The machine the run happened on.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// UTC time of the run.
    pub started_at: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_gib: mem_kib / 1024.0 / 1024.0,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b` as a percentage, when both are known.
fn pct(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.0} %", 100.0 * a / b),
        _ => "-".into(),
    }
}

fn res(r: &Resources) -> String {
    format!("{:.1} MiB, {:.1} CPU s", r.peak_rss_mib, r.cpu_seconds)
}

/// Renders the report as a readable table.
pub fn render(r: &Report) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let copy = r.copy_limit.as_ref().map(|c| c.per_second);
    let broker = r.broker_limit.as_ref().map(|c| c.per_second);
    if let Some(b) = &r.broker_limit {
        rows.push([
            "limit: broker drain (bare subscriber)".into(),
            format!(
                "{:.0} msg/s = {:.0} readings/s",
                b.per_second,
                b.per_second * 8.0
            ),
            format!("{} msgs in {:.2} s", b.items, b.seconds),
            "".into(),
        ]);
    }
    if let Some(c) = &r.copy_limit {
        rows.push([
            "limit: database binary COPY".into(),
            format!("{:.0} rows/s", c.per_second),
            format!("{} rows in {:.2} s", c.items, c.seconds),
            "".into(),
        ]);
    }
    if let Some(d) = &r.drain {
        rows.push([
            "soilmon backlog drain".into(),
            format!(
                "{:.0} readings/s ({:.0} msg/s)",
                d.readings.per_second, d.messages_per_second
            ),
            format!(
                "{} readings in {:.2} s; {} redelivered after stop",
                d.readings.items, d.readings.seconds, d.redelivered_after_stop
            ),
            format!(
                "{} of COPY, {} of broker",
                pct(d.readings.per_second, copy),
                pct(d.messages_per_second, broker)
            ),
        ]);
        rows.push([
            "  soilmon resources (drain)".into(),
            res(&d.resources),
            format!("startup {:.2} s", d.startup_seconds),
            "".into(),
        ]);
    }
    if let Some(l) = &r.latency {
        rows.push([
            "alert latency".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            ),
            format!(
                "{} alerts; {} msgs at {:.0}/s (target {:.0})",
                l.alerts, l.published, l.achieved_rate, l.target_rate
            ),
            "".into(),
        ]);
        rows.push([
            "  soilmon resources (latency)".into(),
            res(&l.resources),
            "".into(),
            "".into(),
        ]);
    }
    match &r.lab {
        Some(LabResult::Skipped { reason }) => {
            rows.push(["lab upload".into(), reason.clone(), "".into(), "".into()])
        }
        Some(LabResult::Done {
            rows: t,
            bytes,
            server_check_ms,
            server_store_ms,
            copy_ms,
            readings_ms,
            resources,
        }) => {
            let ms = |v: &Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
            rows.push([
                "lab upload (one batch, HTTP 201)".into(),
                format!("{:.0} rows/s", t.per_second),
                format!(
                    "{} rows ({:.1} MB) in {:.2} s",
                    t.items,
                    *bytes as f64 / 1e6,
                    t.seconds
                ),
                format!("{} of COPY", pct(t.per_second, copy)),
            ]);
            rows.push([
                "  soilmon resources (lab)".into(),
                res(resources),
                format!(
                    "server: check {}, store {} (COPY {}, readings {})",
                    ms(server_check_ms),
                    ms(server_store_ms),
                    ms(copy_ms),
                    ms(readings_ms)
                ),
                "".into(),
            ]);
        }
        None => {}
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let m = &r.machine;
    let mut out = format!(
        "soilmon bench — {} messages × 8 readings — {} ({} CPUs, {:.1} GiB) — {}\n",
        r.messages, m.cpu, m.cpus, m.mem_gib, m.started_at
    );
    for row in &rows {
        let mut line = String::new();
        for (i, (w, c)) in widths.iter().zip(row).enumerate() {
            if i > 0 {
                line.push_str(" | ");
            }
            line.push_str(c);
            line.push_str(&" ".repeat(w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Runs the bench with the configuration in `settings` (loaded from `config_path`).
pub async fn run(
    settings: &Settings,
    config_path: &Path,
    args: &BenchArgs,
) -> Result<Report, BenchError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if args.messages == 0 || !positive(args.rate) || !positive(args.latency_seconds) {
        return Err(BenchError::Args(
            "--messages, --rate and --latency-seconds must be positive".into(),
        ));
    }
    if !args.skip_lab && lab::split(args.lab_rows, &settings.lab).is_none() {
        return Err(BenchError::Args(format!(
            "--lab-rows {} is too small for one sample with its required duplicates and blanks",
            args.lab_rows
        )));
    }
    let machine = Machine::describe();
    let env = services::BenchEnv::start(settings, config_path, args).await?;
    let result = run_phases(&env, settings, args, machine).await;
    env.finish(args.keep_db).await;
    let report = result?;
    println!("{}", render(&report));
    if let Some(dir) = args.json_out.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(BenchError::io("creating the JSON directory"))?;
        }
    }
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| BenchError::Setup(format!("serialising the report: {e}")))?;
    std::fs::write(&args.json_out, json + "\n").map_err(BenchError::io(format!(
        "writing {}",
        args.json_out.display()
    )))?;
    println!("JSON written to {}", args.json_out.display());
    Ok(report)
}

async fn run_phases(
    env: &services::BenchEnv,
    settings: &Settings,
    args: &BenchArgs,
    machine: Machine,
) -> Result<Report, BenchError> {
    let mut report = Report {
        machine,
        messages: args.messages as u64,
        broker_limit: None,
        copy_limit: None,
        drain: None,
        latency: None,
        lab: None,
    };
    let mut gen = load::Generator::new(settings, args, "b")?;
    if !args.skip_limits || !args.skip_drain {
        // soilmon's persistent session must exist before the backlog is published: start it
        // once, let it subscribe, stop it.
        if !args.skip_drain {
            let mut s = env.soilmon("drain").await?;
            s.stop().await?;
        }
        let bare = if args.skip_limits {
            None
        } else {
            Some(limits::BareSubscriber::register(env.broker.port, &settings.mqtt).await?)
        };
        let msgs = gen.batch(args.messages);
        eprintln!("bench: publishing a backlog of {} messages", msgs.len());
        let published = load::publish_backlog(env.broker.port, &msgs).await?;
        eprintln!(
            "bench: backlog published at {:.0} msg/s",
            published.per_second
        );
        if let Some(bare) = bare {
            eprintln!("bench: limit 1/2: broker drain by a bare subscriber");
            report.broker_limit = Some(bare.drain(args.messages as u64).await?);
            eprintln!("bench: limit 2/2: binary COPY");
            report.copy_limit =
                Some(limits::copy_limit(env, settings, &msgs, args.copy_chunk).await?);
        }
        let (last_station, last_msg_id) = msgs
            .last()
            .map(|m| (m.station.clone(), m.msg_id.clone()))
            .unwrap_or_default();
        drop(msgs);
        if !args.skip_drain {
            eprintln!("bench: soilmon drain");
            report.drain =
                Some(drain::run(env, args.messages as u64, &last_station, &last_msg_id).await?);
        }
    }
    if !args.skip_latency {
        quiesce(env).await;
        eprintln!("bench: alert latency");
        let mut gen = load::Generator::new(settings, args, "l")?;
        report.latency = Some(latency::run(env, &mut gen, args).await?);
    }
    if !args.skip_lab {
        quiesce(env).await;
        eprintln!("bench: lab upload");
        report.lab = Some(lab::run(env, settings, args).await?);
    }
    Ok(report)
}

/// Lets the database settle between phases (vacuum + checkpoint of what the drain wrote), so
/// the latency phase does not pay for the drain's autovacuum and checkpoint. Best effort.
async fn quiesce(env: &services::BenchEnv) {
    let Ok(db) = env.db().await else { return };
    for sql in [
        "VACUUM (ANALYZE) messages, readings, outbox, incident_tracks, incidents",
        "CHECKPOINT",
    ] {
        if let Err(e) = db.batch_execute(sql).await {
            eprintln!("bench: {sql}: {e} (ignored)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn throughput_of_zero_time_is_zero() {
        assert_eq!(Throughput::new(10, Duration::ZERO).per_second, 0.0);
        assert_eq!(Throughput::new(10, Duration::from_secs(2)).per_second, 5.0);
    }

    #[test]
    fn report_renders_fractions_and_skips() {
        let r = Report {
            machine: Machine {
                cpu: "Test CPU".into(),
                cpus: 2,
                mem_gib: 4.0,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
            messages: 10,
            broker_limit: Some(Throughput::new(10, Duration::from_secs(1))),
            copy_limit: Some(Throughput::new(160, Duration::from_secs(1))),
            drain: Some(DrainResult {
                messages: 10,
                readings: Throughput::new(80, Duration::from_secs(1)),
                messages_per_second: 10.0,
                startup_seconds: 0.1,
                redelivered_after_stop: 0,
                resources: Resources::default(),
            }),
            latency: None,
            lab: Some(LabResult::Done {
                rows: Throughput::new(40, Duration::from_secs(1)),
                bytes: 4000,
                server_check_ms: Some(300),
                server_store_ms: Some(600),
                copy_ms: None,
                readings_ms: Some(200),
                resources: Resources::default(),
            }),
        };
        let text = render(&r);
        assert!(text.contains("50 % of COPY, 100 % of broker"), "{text}");
        assert!(text.contains("25 % of COPY"), "{text}");
        assert!(
            text.contains("check 300 ms, store 600 ms (COPY -, readings 200 ms)"),
            "{text}"
        );
        assert!(text.contains("Test CPU (2 CPUs"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lab"]["status"], "done");
        assert_eq!(json["copy_limit"]["per_second"], 160.0);
    }
}
