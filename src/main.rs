//! The `soilmon` command line: parses arguments, loads configuration and dispatches each
//! subcommand to its handler in `cli/` (`soilmon run` starts [`soilmon::service`]).
//! `anyhow` is allowed here and in `cli/`: this is the command layer.

#![warn(missing_docs)]

mod cli;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use cli::archive::CorrectArgs;
use cli::broker::BrokerCommand;
use cli::classify::ClassifyArgs;
use cli::network::{CategoriesArgs, CoverageArgs, EnterprisesCommand, NetworkArgs};
use cli::points::PointsCommand;
use cli::quarantine::QuarantineCommand;
use cli::stations::{BureausCommand, StationsCommand};
use cli::subscriptions::{DeliveriesCommand, SubscriptionsCommand};
use cli::tokens::TokensCommand;
use cli::upload::UploadArgs;
use soilmon::config::{LogFormat, Settings};
use soilmon::simulate;

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
    /// Monitoring coverage per county x point type x land use against the obligations file,
    /// and the required point types each county lacks.
    Coverage(CoverageArgs),
    /// Points overdue now: an owed metal's last accepted sample is older than its interval.
    Overdue(NetworkArgs),
    /// Farmland categories (soil tier x crop co-monitoring) per county and point, with the
    /// evidence and the history; --csv exports.
    Categories(CategoriesArgs),
    /// Key supervised enterprises (credit code, industry, county, location, points).
    #[command(subcommand)]
    Enterprises(EnterprisesCommand),
    /// Development-land plots (地块): registry, status by hand, the land bureau's candidates.
    #[command(subcommand)]
    Plots(cli::plots::PlotsCommand),
    /// Upload a lab batch (CSV, .json or .xlsx) to a running service and print the report; exits
    /// non-zero when the batch is not accepted.
    Upload(UploadArgs),
    /// Write a lab batch CSV (or the header-only template) as an xlsx sheet, the way a lab
    /// keeps it in Excel: numbers, `detected` and dates as typed cells. Uploading the result
    /// gives the same rows and content hash as the CSV (numbers written as Excel shows them).
    LabXlsx {
        /// The CSV file (e.g. config/lab/example-batch.csv).
        csv: PathBuf,
        /// The xlsx file to write.
        out: PathBuf,
    },
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
    /// Alert subscriptions of bureaus (webhook, DingTalk and WeCom robots): secrets go to
    /// deliver.secrets_file, a generated webhook secret is printed once.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Deliveries to subscriptions: list (--failed for dead letters) and retry by hand.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
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
    /// Refused station messages: list them by reason, station and time, show one safely,
    /// replay them through parse → judge → store once the cause is fixed.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
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

/// The allocator: jemalloc rather than glibc's `malloc`. A drain allocates and frees about 160
/// times per station message (31.7 M calls for 200,000 messages, counted with heaptrack) from
/// several threads; with jemalloc the 200,000-message peer-bench drain took 11.7 s instead of
/// 13.5 s (medians of three interleaved runs each) at the same peak RSS, 47–50 MB
/// (docs/performance.md, 2026-12-06, fifth session).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Command::Bench(forward) = &cli.command {
        return cli::bench::forward(&cli.config, &forward.args);
    }
    let settings =
        Settings::load(&cli.config).with_context(|| format!("loading {}", cli.config.display()))?;
    init_logging(&settings);
    let settings = Arc::new(settings);
    match cli.command {
        Command::Run => cli::run::run(settings).await,
        Command::Migrate => cli::run::migrate(&settings).await,
        Command::Points(c) => cli::points::dispatch(&settings, c).await,
        Command::Classify(args) => cli::classify::classify(&settings, &args),
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
        Command::CheckConfig => cli::run::check_config(&settings),
        Command::Tiers => cli::tiers::tiers(&settings).await,
        Command::Coverage(args) => cli::network::coverage(&settings, &args).await,
        Command::Overdue(args) => cli::network::overdue(&settings, &args).await,
        Command::Categories(args) => cli::network::categories(&settings, &args).await,
        Command::Enterprises(c) => cli::network::enterprises(&settings, c).await,
        Command::Plots(c) => cli::plots::plots(&settings, c).await,
        Command::Upload(args) => cli::upload::upload(&settings, &args).await,
        Command::LabXlsx { csv, out } => cli::upload::to_xlsx(&csv, &out),
        Command::Stations(c) => cli::stations::stations(&settings, c).await,
        Command::Bureaus(c) => cli::stations::bureaus(&settings, c).await,
        Command::Tokens(c) => cli::tokens::tokens(&settings, c),
        Command::Subscriptions(c) => cli::subscriptions::subscriptions(&settings, c).await,
        Command::Deliveries(c) => cli::subscriptions::deliveries(&settings, c).await,
        Command::Broker(c) => cli::broker::dispatch(&settings, c).await,
        Command::Verify { from } => cli::archive::verify(&settings, from.as_deref()).await,
        Command::Quarantine(c) => cli::quarantine::dispatch(&settings, c).await,
        Command::Correct(args) => cli::archive::correct(&settings, &args).await,
        // Forwarded above, before the configuration is loaded (soilmon-bench loads it).
        Command::Bench(forward) => cli::bench::forward(&cli.config, &forward.args),
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
