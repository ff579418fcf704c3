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
use soilmon::store::identities::{self, IdentityKind};
use soilmon::{alert, broker, simulate, store};

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
    /// Upload a lab batch (CSV or .json) to a running service and print the report; exits
    /// non-zero when the batch is not accepted.
    Upload(UploadArgs),
    /// Manage station broker identities (credential printed once, broker files regenerated).
    #[command(subcommand)]
    Stations(StationsCommand),
    /// Manage bureau broker identities (read the alerts of their counties only).
    #[command(subcommand)]
    Bureaus(BureausCommand),
    /// HTTP API tokens (roles lab, bureau, admin) in http.tokens_file; the token is printed
    /// once, only its SHA-256 is kept. The running service picks up changes within seconds.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Broker files: regenerate the password and ACL files and reload the broker.
    #[command(subcommand)]
    Broker(BrokerCommand),
    /// Recompute the archive chain and the readings derived from it; exit 1 at the first
    /// broken link.
    Verify {
        /// Start at the first entry created on or after this date (YYYY-MM-DD or RFC 3339).
        #[arg(long)]
        from: Option<String>,
    },
    /// Correct one stored reading (admin database role): recorded in the archive with who,
    /// when and why.
    Correct(CorrectArgs),
    /// End-to-end benchmark on private services: broker and COPY limits, backlog drain, alert
    /// latency, lab upload, resources. Runs the soilmon-bench binary next to this one with
    /// every argument unchanged (`soilmon bench --help` lists its options).
    #[command(disable_help_flag = true)]
    Bench(BenchForward),
}

/// `soilmon bench`: everything after `bench` goes to `soilmon-bench` as it is.
#[derive(clap::Args)]
struct BenchForward {
    /// Options of soilmon-bench (see `soilmon bench --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<std::ffi::OsString>,
}

#[derive(clap::Args)]
struct UploadArgs {
    /// The batch file (CSV, see config/lab/template.csv; `.json` is sent as JSON).
    file: PathBuf,
    /// Service URL; default http://{http.addr}.
    #[arg(long)]
    server: Option<String>,
    /// File holding the bearer token; default: the SOILMON_TOKEN environment variable.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Print the full JSON report instead of the summary.
    #[arg(long)]
    json: bool,
    /// Errors shown in the summary.
    #[arg(long, default_value_t = 20)]
    max_errors: usize,
}

#[derive(Subcommand)]
enum StationsCommand {
    /// Create a station identity; prints its password once.
    Add {
        /// Station id (its topic level: soil/v1/stations/ID/readings).
        id: String,
    },
    /// List station identities.
    List,
    /// Revoke a station: it can no longer connect (broker reloaded).
    Revoke {
        /// Station id.
        id: String,
    },
}

#[derive(Subcommand)]
enum BureausCommand {
    /// Create a bureau identity reading soil/v1/alerts/<county>/#; prints its password once.
    Add {
        /// Bureau name (its broker username).
        name: String,
        /// County code (GB/T 2260), repeatable.
        #[arg(long = "county", required_unless_present = "all")]
        counties: Vec<String>,
        /// City-wide: every county.
        #[arg(long, conflicts_with = "counties")]
        all: bool,
    },
    /// List bureau identities.
    List,
    /// Revoke a bureau identity.
    Revoke {
        /// Bureau name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Create a token; prints it once.
    Add {
        /// Token name (shown in logs and batch records).
        name: String,
        /// lab (upload batches), bureau (read its counties' alerts, incidents, readings) or
        /// admin (read everything: points, stations, bureaus).
        #[arg(long)]
        role: String,
        /// County code a bureau may read (GB/T 2260), repeatable; bureau only.
        #[arg(long = "county")]
        counties: Vec<String>,
        /// City-wide bureau: every county.
        #[arg(long, conflicts_with = "counties")]
        all: bool,
    },
    /// List tokens: name, role, counties.
    List,
    /// Revoke a token (the file is rewritten atomically).
    Revoke {
        /// Token name.
        name: String,
    },
}

#[derive(Subcommand)]
enum BrokerCommand {
    /// Write broker.password_file and broker.acl_file from the database, then run
    /// broker.reload_command.
    Sync,
}

#[derive(clap::Args)]
struct CorrectArgs {
    /// Monitoring point.
    #[arg(long)]
    point: String,
    /// Metal symbol.
    #[arg(long)]
    metal: String,
    /// Sampling time of the reading (RFC 3339).
    #[arg(long)]
    sampled_at: String,
    /// Station id or lab batch id, if several readings match.
    #[arg(long)]
    source_id: Option<String>,
    /// msg_id or sample id, if several readings match.
    #[arg(long)]
    msg_id: Option<String>,
    /// Corrected value, mg/kg.
    #[arg(long)]
    value: f64,
    /// Why (recorded).
    #[arg(long)]
    reason: String,
    /// Who (recorded).
    #[arg(long)]
    by: String,
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
    if let Command::Bench(forward) = &cli.command {
        return forward_to_bench(&cli.config, &forward.args);
    }
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
        Command::Upload(args) => upload(&settings, &args).await,
        Command::Stations(c) => stations(&settings, c).await,
        Command::Bureaus(c) => bureaus(&settings, c).await,
        Command::Tokens(c) => tokens(&settings, c),
        Command::Broker(BrokerCommand::Sync) => {
            let client = admin_connect(&settings).await?;
            broker_sync(&settings, &client).await
        }
        Command::Verify { from } => verify(&settings, from.as_deref()).await,
        Command::Correct(args) => correct(&settings, &args).await,
        // Forwarded above, before the configuration is loaded (soilmon-bench loads it).
        Command::Bench(forward) => forward_to_bench(&cli.config, &forward.args),
    }
}

/// Runs the `soilmon-bench` binary that sits next to this executable with `--config` and
/// `args`, and exits with its status (on Unix it replaces this process).
fn forward_to_bench(config: &Path, args: &[std::ffi::OsString]) -> Result<()> {
    let exe = std::env::current_exe().context("locating the soilmon executable")?;
    let bench = exe.with_file_name(format!("soilmon-bench{}", std::env::consts::EXE_SUFFIX));
    if !bench.is_file() {
        bail!(
            "soilmon bench runs {}, which does not exist: build both binaries with \
             `cargo build --release`",
            bench.display()
        );
    }
    let mut command = std::process::Command::new(&bench);
    command.arg("--config").arg(config).args(args);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let e = command.exec();
        Err(e).with_context(|| format!("running {}", bench.display()))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .with_context(|| format!("running {}", bench.display()))?;
        std::process::exit(status.code().unwrap_or(1));
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

async fn upload(settings: &Settings, a: &UploadArgs) -> Result<()> {
    let token = match &a.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("SOILMON_TOKEN").unwrap_or_default(),
    };
    let server = a
        .server
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.http.addr));
    let answer = soilmon::http::client::upload(&server, &token, &a.file).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&answer.body)?);
    } else {
        print!("{}", soilmon::http::client::summary(&answer, a.max_errors));
    }
    match answer.status {
        200 | 201 => Ok(()),
        422 => std::process::exit(2),
        _ => std::process::exit(1),
    }
}

/// A migrated connection for the admin commands.
async fn admin_connect(settings: &Settings) -> Result<deadpool_postgres::Object> {
    let mut client = connect(settings).await?;
    store::migrate::run(&mut client).await?;
    Ok(client)
}

/// Regenerates the broker files and reloads the broker, printing what was done.
async fn broker_sync(settings: &Settings, client: &tokio_postgres::Client) -> Result<()> {
    let ids = identities::active(client).await?;
    let report = broker::sync(settings, &ids).await?;
    println!(
        "broker files written: {} identities{}; {}",
        report.identities,
        if report.service_identity {
            format!(" + soilmon's own ({})", settings.mqtt.username)
        } else {
            " (no service identity: set mqtt.username and SOILMON__MQTT__PASSWORD)".into()
        },
        if report.reloaded {
            "broker reloaded"
        } else {
            "broker.reload_command is empty: reload the broker now (SIGHUP)"
        }
    );
    Ok(())
}

fn print_identities(ids: &[identities::Identity]) -> Result<()> {
    let lines: Vec<String> = ids
        .iter()
        .map(|i| {
            let scope = match i.kind {
                IdentityKind::Station => String::new(),
                IdentityKind::Bureau if i.all_counties => "\tall counties".into(),
                IdentityKind::Bureau => format!("\tcounties {}", i.counties.join(",")),
            };
            let state = i
                .revoked_at
                .map_or("active".to_string(), |t| format!("revoked {t}"));
            format!("{}\t{}\tcreated {}{scope}", i.username, state, i.created_at)
        })
        .collect();
    write_lines(&mut std::io::stdout().lock(), &lines)
}

async fn stations(settings: &Settings, c: StationsCommand) -> Result<()> {
    let client = admin_connect(settings).await?;
    match c {
        StationsCommand::Add { id } => {
            broker::check_name(&id, settings)?;
            let secret = broker::new_secret();
            let hash = broker::mosquitto_hash(&secret);
            identities::add(&client, &id, IdentityKind::Station, &hash, &[], false).await?;
            println!("station {id} created; its broker password (shown once, stored hashed):");
            println!("password: {secret}");
            broker_sync(settings, &client).await
        }
        StationsCommand::List => {
            print_identities(&identities::list(&client, Some(IdentityKind::Station)).await?)
        }
        StationsCommand::Revoke { id } => {
            identities::revoke(&client, IdentityKind::Station, &id).await?;
            println!("station {id} revoked");
            broker_sync(settings, &client).await
        }
    }
}

async fn bureaus(settings: &Settings, c: BureausCommand) -> Result<()> {
    let client = admin_connect(settings).await?;
    match c {
        BureausCommand::Add {
            name,
            counties,
            all,
        } => {
            broker::check_name(&name, settings)?;
            if let Some(c) = counties
                .iter()
                .find(|c| !settings.registry.counties.contains(c))
            {
                bail!(
                    "unknown county {c:?} (registry.counties: {:?})",
                    settings.registry.counties
                );
            }
            let secret = broker::new_secret();
            let hash = broker::mosquitto_hash(&secret);
            identities::add(&client, &name, IdentityKind::Bureau, &hash, &counties, all).await?;
            println!("bureau {name} created; its broker password (shown once, stored hashed):");
            println!("password: {secret}");
            broker_sync(settings, &client).await
        }
        BureausCommand::List => {
            print_identities(&identities::list(&client, Some(IdentityKind::Bureau)).await?)
        }
        BureausCommand::Revoke { name } => {
            identities::revoke(&client, IdentityKind::Bureau, &name).await?;
            println!("bureau {name} revoked");
            broker_sync(settings, &client).await
        }
    }
}

fn tokens(settings: &Settings, c: TokensCommand) -> Result<()> {
    use soilmon::http::auth::{self, Role};
    use soilmon::store::queries::Scope;
    let path = &settings.http.tokens_file;
    if path.as_os_str().is_empty() {
        bail!("http.tokens_file is not set (SOILMON__HTTP__TOKENS_FILE)");
    }
    match c {
        TokensCommand::Add {
            name,
            role,
            counties,
            all,
        } => {
            let Some(role) = Role::parse(&role) else {
                bail!("--role must be lab, bureau or admin");
            };
            let scope = match role {
                Role::Bureau if all => Scope::All,
                Role::Bureau if counties.is_empty() => {
                    bail!("a bureau token needs --county CODE (repeatable) or --all")
                }
                Role::Bureau => {
                    if let Some(c) = counties
                        .iter()
                        .find(|c| !settings.registry.counties.contains(c))
                    {
                        bail!(
                            "unknown county {c:?} (registry.counties: {:?})",
                            settings.registry.counties
                        );
                    }
                    Scope::Counties(counties)
                }
                _ if all || !counties.is_empty() => {
                    bail!("--county and --all apply to bureau tokens only")
                }
                Role::Admin => Scope::All,
                Role::Lab => Scope::Counties(Vec::new()),
            };
            let token = auth::add(path, &name, role, scope)?;
            println!(
                "{role} token {name} added to {}; the token (shown once, stored hashed):",
                path.display()
            );
            println!("token: {token}");
            Ok(())
        }
        TokensCommand::List => {
            let lines: Vec<String> = auth::entries(path)?
                .iter()
                .map(|p| {
                    let scope = match (p.role, &p.scope) {
                        (Role::Bureau, Scope::All) => "\tall counties".to_string(),
                        (Role::Bureau, Scope::Counties(c)) => format!("\tcounties {}", c.join(",")),
                        _ => String::new(),
                    };
                    format!("{}\t{}{scope}", p.name, p.role)
                })
                .collect();
            write_lines(&mut std::io::stdout().lock(), &lines)
        }
        TokensCommand::Revoke { name } => {
            auth::revoke(path, &name)?;
            println!(
                "token {name} revoked; the running service refuses it within {} s",
                auth::RELOAD_CHECK.as_secs()
            );
            Ok(())
        }
    }
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(d.and_time(chrono::NaiveTime::MIN).and_utc())
}

async fn verify(settings: &Settings, from: Option<&str>) -> Result<()> {
    let from = from.map(parse_date).transpose()?;
    let mut client = connect(settings).await?;
    let report = store::archive::verify(&mut client, from).await?;
    match &report.broken {
        None => {
            println!(
                "archive OK: {} entries, {} readings verified; head seq {} hash {}",
                report.entries, report.readings, report.last_seq, report.last_hash
            );
            Ok(())
        }
        Some(b) => {
            println!(
                "archive BROKEN after {} verified entries: {b}",
                report.entries
            );
            std::process::exit(1);
        }
    }
}

async fn correct(settings: &Settings, a: &CorrectArgs) -> Result<()> {
    let standards = settings.standards()?;
    let Some(metal) = Metal::parse(&a.metal) else {
        bail!("unknown metal {:?}", a.metal);
    };
    let sampled_at = chrono::DateTime::parse_from_rfc3339(&a.sampled_at)
        .with_context(|| format!("--sampled-at {:?} is not RFC 3339", a.sampled_at))?
        .with_timezone(&chrono::Utc);
    let mut client = admin_connect(settings).await?;
    let req = store::archive::CorrectionRequest {
        point_id: a.point.clone(),
        metal,
        sampled_at,
        source_id: a.source_id.clone(),
        msg_id: a.msg_id.clone(),
        value_mgkg: a.value,
        reason: a.reason.clone(),
        by: a.by.clone(),
    };
    let (c, entry) = store::archive::correct(&mut client, &standards, &req).await?;
    println!(
        "corrected {} {} at point {} ({}/{}): {} -> {} mg/kg, level {} -> {}; archive entry {}",
        c.new.metal,
        c.new.msg_id,
        c.new.point_id,
        c.source,
        c.source_id,
        c.old.value_mgkg,
        c.new.value_mgkg,
        c.old.level,
        c.new.level,
        entry.seq
    );
    Ok(())
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
    let tokens = soilmon::http::auth::TokenStore::open(&settings.http.tokens_file)?;
    if tokens.is_empty() {
        warn!("http: no API tokens configured (http.tokens_file); every /v1 request will get 401");
    }
    let metrics = soilmon::http::metrics::install()
        .map_err(|e| warn!(error = %e, "metrics recorder not installed"))
        .ok();
    let http = tokio::spawn(soilmon::http::serve(
        Arc::new(soilmon::http::AppState {
            settings: settings.clone(),
            pool: pool.clone(),
            registry: registry.clone(),
            standards: standards.clone(),
            outbox: outbox.clone(),
            tokens,
            metrics,
            limiter: soilmon::http::RateLimiter::new(settings.http.rate_limit_per_minute),
        }),
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
    if let Err(e) = http.await? {
        warn!(error = %e, "http server stopped with an error");
    }
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
