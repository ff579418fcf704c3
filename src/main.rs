//! The `soilmon` command line: parses arguments, loads configuration, wires the adapters
//! (MQTT collector, alert publisher, database) around the pure domain core.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use soilmon::config::{LogFormat, Settings};
use soilmon::domain::judge::judge;
use soilmon::domain::metal::Metal;
use soilmon::domain::point::LandUse;
use soilmon::domain::unit::Unit;
use soilmon::ingest::collector::{self, sleep_or_cancel, Backoff, Shared};
use soilmon::registry::{parse_points_csv, Registry};
use soilmon::{alert, simulate, store};

/// soilmon: soil heavy-metal monitoring ingestion (MQTT + lab batches → GB 15618 / GB 36600
/// judgements in TimescaleDB → exceedance alerts).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Configuration file; every key can be overridden as SOILMON__SECTION__KEY.
    #[arg(
        long,
        global = true,
        default_value = "config/default.toml",
        env = "SOILMON_CONFIG"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: migrate, then collect station readings and publish alerts until
    /// SIGINT/SIGTERM.
    Run,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage the monitoring-point registry.
    #[command(subcommand)]
    Points(PointsCommand),
    /// Judge one value by hand and print the thresholds used.
    Classify(ClassifyArgs),
    /// Publish readings from a simulated station network (for demos and load).
    Simulate(simulate::SimulateArgs),
    /// Load and check the configuration and standards files, print a summary.
    CheckConfig,
    /// Print the soil screening tier of each farmland point (soil-only).
    Tiers,
    /// End-to-end benchmark on private services: broker and COPY limits, backlog drain, alert
    /// latency, lab upload, resources.
    Bench(soilmon::bench::BenchArgs),
}

#[derive(Subcommand)]
enum PointsCommand {
    /// Import (insert or update) points from a CSV file:
    /// point_id,name,county_code,lon,lat,point_type,land_use,ph
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// List registered points.
    List,
}

#[derive(clap::Args)]
struct ClassifyArgs {
    /// Land use: paddy, dry_land, irrigated, vegetable, orchard, tea, grassland,
    /// paddy_upland_rotation, development_first, development_second (or the Chinese name).
    #[arg(long)]
    land_use: String,
    /// Soil pH; omit to judge with the strictest band (reported as assumed).
    #[arg(long)]
    ph: Option<f64>,
    /// Metal symbol or Chinese name (Pb Hg Cd Cr Cr6 As Cu Zn Ni).
    #[arg(long)]
    metal: String,
    /// Measured value (or the detection limit with --not-detected).
    #[arg(long, allow_negative_numbers = true)]
    value: f64,
    /// Unit of the value.
    #[arg(long, default_value = "mg/kg")]
    unit: String,
    /// The value is a detection limit: the analyte was not detected.
    #[arg(long)]
    not_detected: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let settings =
        Settings::load(&cli.config).with_context(|| format!("loading {}", cli.config.display()))?;
    init_logging(&settings);
    let settings = Arc::new(settings);
    match cli.command {
        Command::Run => run(settings).await,
        Command::Migrate => migrate(&settings).await,
        Command::Points(PointsCommand::Import { file }) => import_points(&settings, &file).await,
        Command::Points(PointsCommand::List) => list_points(&settings).await,
        Command::Classify(args) => classify(&settings, &args),
        Command::Simulate(args) => {
            let standards = settings.standards()?;
            let report = simulate::run(
                &args,
                &settings.mqtt,
                &standards,
                &settings.registry.counties,
            )
            .await?;
            println!(
                "published {} messages ({} exceeding, {} deliberately bad) in {:.1} s; {} rejects received",
                report.published,
                report.exceeding,
                report.bad,
                report.elapsed.as_secs_f64(),
                report.rejects_received
            );
            Ok(())
        }
        Command::CheckConfig => check_config(&settings),
        Command::Tiers => tiers(&settings).await,
        Command::Bench(args) => soilmon::bench::run(&settings, &cli.config, &args)
            .await
            .map(drop)
            .map_err(Into::into),
    }
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn connect(settings: &Settings) -> Result<deadpool_postgres::Object> {
    let pool = store::pool(&settings.database)?;
    pool.get().await.context("connecting to the database")
}

async fn migrate(settings: &Settings) -> Result<()> {
    let mut client = connect(settings).await?;
    let report = store::migrate::run(&mut client).await?;
    println!(
        "schema up to date (applied {:?}); TimescaleDB license {}, compression policy {}",
        report.applied,
        report.license,
        if report.compression {
            "on"
        } else {
            "not available"
        }
    );
    Ok(())
}

async fn import_points(settings: &Settings, file: &Path) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let points = parse_points_csv(f, &settings.registry.counties)
        .with_context(|| format!("reading {}", file.display()))?;
    let mut client = connect(settings).await?;
    store::migrate::run(&mut client).await?;
    let n = store::points::upsert(&mut client, &points).await?;
    println!("imported {n} points from {}", file.display());
    Ok(())
}

async fn list_points(settings: &Settings) -> Result<()> {
    let client = connect(settings).await?;
    let (mut points, _) = store::points::load(&client).await?;
    points.sort_by(|a, b| a.id.cmp(&b.id));
    let lines: Vec<String> = points
        .iter()
        .map(|p| {
            let ph = p.ph.map_or("-".to_string(), |v| v.to_string());
            format!(
                "{}\t{}\t{}\t{}\tpH {}\t{}",
                p.id,
                p.county_code,
                p.point_type.as_str(),
                p.land_use,
                ph,
                p.name
            )
        })
        .collect();
    write_lines(&mut std::io::stdout().lock(), &lines)
}

fn classify(settings: &Settings, a: &ClassifyArgs) -> Result<()> {
    let standards = settings.standards()?;
    let Some(land_use) = LandUse::parse(&a.land_use) else {
        bail!("unknown land use {:?}", a.land_use);
    };
    let Some(metal) = Metal::parse(&a.metal) else {
        bail!("unknown metal {:?}", a.metal);
    };
    let Some(unit) = Unit::parse(&a.unit) else {
        bail!("unknown unit {:?}", a.unit);
    };
    if !a.value.is_finite() || a.value < 0.0 {
        bail!("value must be a finite, non-negative number");
    }
    if let Some(ph) = a.ph {
        if !(0.0..=14.0).contains(&ph) {
            bail!("ph must be within 0-14");
        }
    }
    let value = a.value * unit.to_mg_per_kg();
    let j = judge(&standards, land_use, a.ph, metal, value, !a.not_detected);
    if a.json {
        let out = serde_json::json!({
            "land_use": land_use, "ph": a.ph, "metal": metal, "value_mgkg": value,
            "detected": !a.not_detected, "level": j.level, "thresholds": j.thresholds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{metal} {value} mg/kg on {land_use} → {}", j.level);
    match &j.thresholds {
        None => println!("  no applicable standard for {metal} on {land_use}"),
        Some(t) => {
            println!("  standard   {} ({})", t.standard_id, t.standard_version);
            println!("  column     {}", t.column);
            if let Some(b) = t.ph_band {
                let note = if t.ph_assumed {
                    " (no pH given: strictest band assumed)"
                } else {
                    ""
                };
                println!("  pH band    {b}{note}");
            }
            println!(
                "  screening  {} mg/kg  [{}]",
                t.screening, t.screening_source
            );
            match (t.intervention, &t.intervention_source) {
                (Some(i), Some(src)) => println!("  intervention {i} mg/kg  [{src}]"),
                _ => println!("  intervention none (cannot reach strict control)"),
            }
        }
    }
    if land_use.is_farmland() {
        println!("  note: soil-only screening; the legal farmland category also needs crop co-monitoring");
    }
    Ok(())
}

fn check_config(settings: &Settings) -> Result<()> {
    let standards = settings.standards()?;
    println!("configuration OK");
    for s in [&standards.farmland, &standards.development] {
        println!(
            "  {} ({}) for {:?} land, pH bands {:?}",
            s.id, s.version, s.applies_to, s.ph_upper_bounds
        );
    }
    println!(
        "  mqtt {}:{} as {:?}",
        settings.mqtt.host, settings.mqtt.port, settings.mqtt.client_id
    );
    println!("  counties {:?}", settings.registry.counties);
    Ok(())
}

async fn tiers(settings: &Settings) -> Result<()> {
    let client = connect(settings).await?;
    let rows = client
        .query(
            "SELECT point_id, soil_tier, metals_seen, latest_sample FROM point_soil_tiers
             ORDER BY point_id",
            &[],
        )
        .await?;
    let mut out = std::io::stdout().lock();
    let mut lines = vec![
        "soil screening tier per farmland point (soil only: the legal category also needs crop co-monitoring)".to_string(),
    ];
    for r in rows {
        let latest: chrono::DateTime<chrono::Utc> = r.get(3);
        let seen: i64 = r.get(2);
        lines.push(format!(
            "{}\t{}\t{} metals\tlatest {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            seen,
            latest
        ));
    }
    write_lines(&mut out, &lines)
}

/// Writes lines to stdout; a reader that went away (`| head`) ends the output quietly.
fn write_lines(out: &mut impl std::io::Write, lines: &[String]) -> Result<()> {
    for l in lines {
        match writeln!(out, "{l}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run(settings: Arc<Settings>) -> Result<()> {
    let standards = Arc::new(settings.standards()?);
    let pool = store::pool(&settings.database)?;
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutdown requested");
            shutdown.cancel();
        });
    }

    // Migrate and load the registry, retrying while the database is not there yet.
    let mut backoff = Backoff::new(
        settings.database.retry_min_ms,
        settings.database.retry_max_ms,
    );
    let registry = loop {
        match prepare(&pool).await {
            Ok(r) => break r,
            Err(e) => {
                let d = backoff.next_delay();
                warn!(error = %e, retry_in_ms = d.as_millis() as u64, "startup: database not ready");
                if !sleep_or_cancel(d, &shutdown).await {
                    return Ok(());
                }
            }
        }
    };
    info!(points = registry.len(), "registry loaded");
    let registry = Arc::new(RwLock::new(Arc::new(registry)));
    let outbox = Arc::new(Notify::new());

    let refresher = tokio::spawn(refresh_registry(
        pool.clone(),
        registry.clone(),
        Duration::from_secs(settings.ingest.registry_refresh_secs.max(1)),
        shutdown.clone(),
    ));
    let publisher = tokio::spawn(alert::publisher::run(
        settings.clone(),
        pool.clone(),
        outbox.clone(),
        shutdown.clone(),
    ));
    let shared = Shared {
        settings: settings.clone(),
        pool: pool.clone(),
        registry,
        standards,
        outbox: outbox.clone(),
        shutdown: shutdown.clone(),
    };
    let result = collector::run(shared).await;
    shutdown.cancel();
    publisher.await?;
    refresher.await?;
    result?;
    info!("stopped");
    Ok(())
}

async fn prepare(pool: &deadpool_postgres::Pool) -> Result<Registry> {
    let mut client = pool.get().await?;
    store::migrate::run(&mut client).await?;
    let (points, skipped) = store::points::load(&client).await?;
    if skipped > 0 {
        warn!(
            skipped,
            "registry rows with unknown land use or point type skipped"
        );
    }
    Ok(Registry::new(points))
}

async fn refresh_registry(
    pool: deadpool_postgres::Pool,
    registry: Arc<RwLock<Arc<Registry>>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    while sleep_or_cancel(every, &shutdown).await {
        let loaded = match pool.get().await {
            Ok(client) => store::points::load(&client)
                .await
                .map_err(anyhow::Error::from),
            Err(e) => Err(e.into()),
        };
        match loaded {
            Ok((points, _)) => {
                let fresh = Arc::new(Registry::new(points));
                match registry.write() {
                    Ok(mut r) => *r = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
            }
            Err(e) => warn!(error = %e, "registry refresh failed; keeping the previous snapshot"),
        }
    }
}
