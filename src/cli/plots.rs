//! `soilmon plots import|list|status|candidates`: the development-land plot registry (地块)
//! and the land bureau's candidate list. Statuses change only by `plots status`, with who and
//! why recorded; the candidate list proposes, it never changes a status.

use anyhow::{Context as _, Result};
use clap::Subcommand;

use soilmon::config::Settings;
use soilmon::domain::enterprise::PlotStatus;
use soilmon::store;

use super::{connect, counties_or_all, write_lines};

/// `soilmon plots …`.
#[derive(Subcommand)]
pub enum PlotsCommand {
    /// Import (insert or update) plots from a CSV file:
    /// plot_id,name,county_code,planned_use,status,points. planned_use: first or second (GB
    /// 36600 class; also development_first/development_second, 第一类用地/第二类用地); status:
    /// empty (registered, not suspected) or suspected, investigated, risk_control, remediated,
    /// for new plots only; points ';'-separated, registered development-land points of the
    /// plot's class, each in one plot. Refused whole with the line and a reason code.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
        /// Who imports (recorded with a new plot's initial status).
        #[arg(long, default_value = "import")]
        by: String,
    },
    /// List plots with their points, status and status history.
    List(PlotsListArgs),
    /// Change a plot's status by hand: one step (suspected -> investigated -> risk_control ->
    /// remediated) or back to suspected; who and why are recorded.
    Status {
        /// Plot id.
        plot_id: String,
        /// New status: suspected, investigated, risk_control or remediated.
        status: String,
        /// Who decides.
        #[arg(long)]
        by: String,
        /// Why (e.g. the survey report's number).
        #[arg(long)]
        reason: String,
    },
    /// The land bureau's candidate list: plots whose readings exceed GB 36600 screening
    /// (suspected contaminated site) or intervention (risk control), with the readings.
    /// Proposals only: no status is changed.
    Candidates(PlotsListArgs),
}

/// Options of `plots list` and `plots candidates`.
#[derive(clap::Args)]
pub struct PlotsListArgs {
    /// Only these counties (GB/T 2260 codes); default: every county.
    #[arg(long, value_delimiter = ',')]
    county: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs one `soilmon plots` command.
pub async fn plots(settings: &Settings, c: PlotsCommand) -> Result<()> {
    let out = &mut std::io::stdout().lock();
    match c {
        PlotsCommand::Import { file, by } => {
            let (f, mut client, registry) = super::open_for_import(settings, &file).await?;
            let list =
                soilmon::registry::parse_plots_csv(f, &settings.registry.counties, &registry)
                    .with_context(|| format!("reading {}", file.display()))?;
            let reason = format!("imported from {}", file.display());
            let n = store::plots::import(&mut client, &list, &by, &reason).await?;
            write_lines(
                out,
                &[format!("imported {n} plots from {}", file.display())],
            )
        }
        PlotsCommand::List(args) => {
            let counties = counties_or_all(settings, &args.county)?;
            let client = connect(settings).await?;
            let plots = store::plots::list(&client, &counties).await?;
            if args.json {
                return write_lines(out, &[serde_json::to_string_pretty(&plots)?]);
            }
            let lines: Vec<String> = plots
                .iter()
                .map(|p| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}\t{}\t{} status changes",
                        p.county_code,
                        p.plot_id,
                        p.planned_use,
                        p.status.as_deref().unwrap_or("registered"),
                        p.name,
                        p.points.join(";"),
                        p.history.len()
                    )
                })
                .collect();
            write_lines(out, &lines)
        }
        PlotsCommand::Status {
            plot_id,
            status,
            by,
            reason,
        } => {
            let to = PlotStatus::parse(&status).with_context(|| {
                format!(
                    "bad_status: {status:?} (suspected, investigated, risk_control, remediated)"
                )
            })?;
            let mut client = super::admin_connect(settings).await?;
            let from = store::plots::set_status(&mut client, &plot_id, to, &by, &reason).await?;
            write_lines(
                out,
                &[format!(
                    "plot {plot_id}: {} -> {} (by {by}: {reason})",
                    from.map_or("registered", PlotStatus::as_str),
                    to.as_str()
                )],
            )
        }
        PlotsCommand::Candidates(args) => candidates(settings, &args).await,
    }
}

/// Prints the land bureau's candidate list with its evidence.
async fn candidates(settings: &Settings, args: &PlotsListArgs) -> Result<()> {
    let out = &mut std::io::stdout().lock();
    let counties = counties_or_all(settings, &args.county)?;
    let client = connect(settings).await?;
    let list = store::plots::candidates(&client, &counties).await?;
    if args.json {
        return write_lines(out, &[serde_json::to_string_pretty(&list)?]);
    }
    let mut lines = vec![format!(
        "{} plot candidates for the land bureau (proposals; no status is changed)",
        list.len()
    )];
    for c in &list {
        lines.push(format!(
            "{}\t{}\t{}\tnow {}\tcandidate {}\t{}",
            c.county_code,
            c.plot_id,
            c.planned_use,
            c.status.as_deref().unwrap_or("registered"),
            c.candidate.as_str(),
            c.name
        ));
        for r in &c.evidence {
            lines.push(format!(
                "\t{} {} {} mg/kg {} sampled {} ({} {} {})",
                r.point_id,
                r.metal,
                r.value_mgkg,
                r.level,
                r.sampled_at.format("%Y-%m-%d"),
                r.source,
                r.source_id,
                r.msg_id
            ));
        }
    }
    write_lines(out, &lines)
}
