//! `soilmon-bench` (also run as `soilmon bench`): a reproducible end-to-end benchmark against
//! the physical limits of soilmon's own parts, measured in the same run on the same machine.
//!
//! # Why a second binary
//!
//! The bench creates and drops databases, starts a broker and signals processes: none of that
//! belongs in the binary a bureau runs. It is a second binary target of the same package
//! (`src/bin/soilmon-bench/`) rather than a workspace member, because the project's top level
//! stays as it is, one `cargo build --release` builds both binaries, and the bench is only a
//! client of the library's public API (configuration, registry, payload parser, simulator
//! message generation, store's COPY and the upload client). `soilmon bench …` forwards every
//! argument unchanged to the `soilmon-bench` next to the `soilmon` executable.
//!
//! # What it runs
//!
//! The bench starts **its own** services so that it never disturbs the development broker or
//! database: a private mosquitto on a free loopback port (config, persistence and log in a
//! temp dir; `max_queued_messages` above the backlog, `max_inflight_messages 1000`) and a
//! fresh database `soilmon_bench_<unix time>` on the local cluster named by
//! `database.url`, dropped at the end. The soilmon under test is the `soilmon` binary next to
//! this one (or `--soilmon-bin PATH`), run with `run` as a child process with
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
//! 5. **Deliveries** ([`deliveries`], with `--deliveries`): alert latency from a station's
//!    publish to a webhook receiver's request with `--subscriptions` subscriptions, and the
//!    delivery rate to a receiver answering in `--slow-ms`, sequential and concurrent.
//! 6. **Resources** ([`resources`]): peak RSS (`VmHWM`) and CPU seconds of the soilmon process
//!    in each phase (a fresh process per phase).
//!
//! The result ([`report`]) is printed as a table and written as JSON (`--json-out`). The
//! messages come from [`load`], which builds them with the simulator's pure generation
//! ([`soilmon::simulate::generate`]). Nothing here is run by `cargo test` except the pure
//! helpers' unit tests.

#![warn(missing_docs)]

mod deliveries;
mod drain;
mod lab;
mod latency;
mod limits;
mod load;
mod report;
mod resources;
mod services;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;

use report::{Machine, Report};
use soilmon::config::Settings;

/// soilmon-bench: end-to-end benchmark of soilmon on private services (its own mosquitto and a
/// fresh database on the local cluster): broker and COPY limits, backlog drain, alert latency,
/// lab upload, resources. Prints a table and writes the JSON to --json-out.
///
/// `soilmon bench OPTIONS` runs this same program with the same options.
#[derive(Parser)]
#[command(
    name = "soilmon-bench",
    version,
    about,
    long_about,
    args_override_self = true
)]
struct Cli {
    /// Configuration file of the soilmon under test; every key can be overridden as
    /// SOILMON__SECTION__KEY (the bench's own overrides come on top).
    #[arg(long, default_value = "config/default.toml", env = "SOILMON_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings =
        Settings::load(&cli.config).with_context(|| format!("loading {}", cli.config.display()))?;
    init_logging(&settings);
    run(&settings, &cli.config, &cli.bench).await?;
    Ok(())
}

/// Logs of the library calls the bench makes (few: it reports on stdout) go to stderr as
/// text, at `log.level` unless `RUST_LOG` is set.
fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

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

/// Options of `soilmon-bench` (and `soilmon bench`).
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
    /// Also write every alert's latency as CSV (`sent_s,latency_ms`) to this file.
    #[arg(long)]
    pub latency_timeline: Option<PathBuf>,
    /// Skip the lab-upload phase.
    #[arg(long)]
    pub skip_lab: bool,
    /// Run the deliveries phase (webhook latency and the rate to a slow receiver).
    #[arg(long)]
    pub deliveries: bool,
    /// Webhook subscriptions in the deliveries phase, each receiving every alert.
    #[arg(long, default_value_t = 50)]
    pub subscriptions: usize,
    /// Answer time of the slow receiver in the deliveries phase, ms.
    #[arg(long, default_value_t = 200)]
    pub slow_ms: u64,
    /// Concurrency of the second slow-receiver run (the first has 1).
    #[arg(long, default_value_t = 16)]
    pub slow_concurrency: usize,
    /// Keep the bench database (for inspection) instead of dropping it.
    #[arg(long)]
    pub keep_db: bool,
    /// The soilmon binary under test; default: the `soilmon` next to this executable.
    #[arg(long)]
    pub soilmon_bin: Option<PathBuf>,
    /// mosquitto executable.
    #[arg(long, env = "SOILMON_MOSQUITTO", default_value = "/usr/sbin/mosquitto")]
    pub mosquitto: PathBuf,
    /// Extra environment overrides for the soilmon under test, KEY=VALUE (repeatable), e.g.
    /// `--soilmon-env SOILMON__INGEST__BATCH_MAX=1000`.
    #[arg(long = "soilmon-env")]
    pub soilmon_env: Vec<String>,
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
    println!("{}", report::render(&report));
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
        deliveries: None,
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
    if args.deliveries {
        quiesce(env).await;
        eprintln!("bench: deliveries");
        report.deliveries = Some(deliveries::run(env, settings, args).await?);
    }
    Ok(report)
}

/// Lets the database settle between phases (vacuum + checkpoint of what the drain wrote), so
/// the latency phase does not pay for the drain's autovacuum and checkpoint. Best effort.
async fn quiesce(env: &services::BenchEnv) {
    let Ok(db) = env.db().await else { return };
    for sql in [
        "VACUUM (ANALYZE) samples, readings, archive, outbox, incident_tracks, incidents",
        "CHECKPOINT",
    ] {
        if let Err(e) = db.batch_execute(sql).await {
            eprintln!("bench: {sql}: {e} (ignored)");
        }
    }
}
