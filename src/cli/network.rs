//! `soilmon coverage` and `soilmon overdue`: the monitoring network against its obligations
//! (`network.obligations_file`).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use chrono::Utc;
use clap::Args;

use soilmon::config::Settings;
use soilmon::store;

use super::{connect, counties_or_all, write_lines};

/// Options of `soilmon coverage` and `soilmon overdue`.
#[derive(Args)]
pub struct NetworkArgs {
    /// Only these counties (GB/T 2260 codes); default: every county of registry.counties.
    #[arg(long, value_delimiter = ',')]
    county: Vec<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Options of `soilmon coverage`.
#[derive(Args)]
pub struct CoverageArgs {
    #[command(flatten)]
    network: NetworkArgs,
    /// Write the report as an xlsx workbook to FILE (sheets `coverage` and `counties`)
    /// instead of printing it.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    xlsx: Option<PathBuf>,
}

/// Writes an xlsx workbook and says so.
fn write_xlsx(
    path: &Path,
    book: Result<Vec<u8>, soilmon::http::console::export::ExportError>,
) -> Result<()> {
    let book = book?;
    std::fs::write(path, &book).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {} ({} bytes)", path.display(), book.len());
    Ok(())
}

/// Prints the coverage table and, per county, the missing required point types.
pub async fn coverage(settings: &Settings, args: &CoverageArgs) -> Result<()> {
    let obligations = settings.obligations()?;
    let counties = counties_or_all(settings, &args.network.county)?;
    let client = connect(settings).await?;
    let report = store::network::coverage(&client, &obligations, &counties, Utc::now()).await?;
    if let Some(path) = &args.xlsx {
        return write_xlsx(path, soilmon::http::network::coverage_xlsx(&report));
    }
    if args.network.json {
        return write_lines(
            &mut std::io::stdout().lock(),
            &[serde_json::to_string_pretty(&report)?],
        );
    }
    let mut lines = vec![
        format!(
            "coverage as of {} ({})",
            report.as_of.format("%Y-%m-%d %H:%M UTC"),
            report.obligations
        ),
        "county\tpoint_type\tland_use\tpoints\tsampled_in_window\tnever_sampled\toverdue"
            .to_string(),
    ];
    for c in &report.cells {
        lines.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            c.county_code,
            c.point_type,
            c.land_use,
            c.points,
            c.sampled_in_window,
            c.never_sampled,
            c.overdue
        ));
    }
    lines.push(format!(
        "required point types per county: {}",
        report.required_point_types.join(", ")
    ));
    for c in &report.counties {
        let state = if c.complete {
            "complete".to_string()
        } else {
            format!("missing {}", c.missing_point_types.join(", "))
        };
        lines.push(format!("{}\t{} points\t{state}", c.county_code, c.points));
    }
    write_lines(&mut std::io::stdout().lock(), &lines)
}

/// Prints the points overdue now (computed from the readings, as the periodic check does).
pub async fn overdue(settings: &Settings, args: &NetworkArgs) -> Result<()> {
    let obligations = settings.obligations()?;
    let counties = counties_or_all(settings, &args.county)?;
    let client = connect(settings).await?;
    let mut points = store::network::points(&client).await?;
    points.retain(|p| counties.contains(&p.point.county_code));
    let last = store::network::last_samples(&client, &points).await?;
    let now = Utc::now();
    let due = store::network::overdue_now(&obligations, &points, &last, now);
    if args.json {
        return write_lines(
            &mut std::io::stdout().lock(),
            &[serde_json::to_string_pretty(&due)?],
        );
    }
    let mut lines = vec![format!(
        "{} points overdue as of {} ({} {})",
        due.len(),
        now.format("%Y-%m-%d %H:%M UTC"),
        obligations.id,
        obligations.version
    )];
    for (point, metals) in &due {
        for m in metals {
            let last = m.last_sampled_at.map_or("never sampled".to_string(), |t| {
                format!("last {}", t.format("%Y-%m-%d"))
            });
            lines.push(format!(
                "{point}\t{}\t{last}\tdue {}\tevery {} d ({})",
                m.metal,
                m.due_at.format("%Y-%m-%d"),
                m.interval_days,
                m.program
            ));
        }
    }
    write_lines(&mut std::io::stdout().lock(), &lines)
}

/// Options of `soilmon categories`.
#[derive(Args)]
pub struct CategoriesArgs {
    /// Only these counties (GB/T 2260 codes); default: every county.
    #[arg(long, value_delimiter = ',')]
    county: Vec<String>,
    /// Print the whole report as JSON (evidence and history included).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV: one line per point and campaign, with the evidence.
    #[arg(long, conflicts_with = "xlsx")]
    csv: bool,
    /// Write an xlsx workbook to FILE (sheet `categories`: the CSV's rows; sheet `counts`:
    /// points per outcome and county) instead of printing.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    xlsx: Option<PathBuf>,
}

/// Prints the farmland categories per county and point (soil-only points as soil tier).
pub async fn categories(settings: &Settings, args: &CategoriesArgs) -> Result<()> {
    let rules = settings.crop_rules()?;
    let counties = counties_or_all(settings, &args.county)?;
    let client = connect(settings).await?;
    let report = store::crops::categories(&client, &rules, &counties).await?;
    if let Some(path) = &args.xlsx {
        return write_xlsx(path, soilmon::http::network::categories_xlsx(&report));
    }
    let out = &mut std::io::stdout().lock();
    if args.json {
        return write_lines(out, &[serde_json::to_string_pretty(&report)?]);
    }
    if args.csv {
        return write_lines(out, &store::crops::to_csv(&report));
    }
    let mut lines = vec![format!(
        "farmland categories ({}; {}); {}",
        report.rules, report.food_standard, report.note
    )];
    for c in &report.counties {
        let counts: Vec<String> = c.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
        lines.push(format!(
            "{}\t{} points\t{}",
            c.county_code,
            c.points,
            counts.join(", ")
        ));
    }
    for p in &report.points {
        let key = store::crops::outcome_key(p.current.as_ref());
        let campaign = p.current.as_ref().map_or("-", |c| c.campaign.as_str());
        let changes: Vec<&str> = p
            .history
            .iter()
            .filter(|c| c.changed)
            .map(|c| c.campaign.as_str())
            .collect();
        let crops = p.current.as_ref().map_or(0, |c| c.crops.len());
        lines.push(format!(
            "{}\t{}\t{}\tcampaign {campaign}\t{key}\t{crops} crop results\tchanged in: {}",
            p.county_code,
            p.point_id,
            p.land_use,
            if changes.is_empty() {
                "-".to_string()
            } else {
                changes.join(",")
            }
        ));
    }
    write_lines(out, &lines)
}

/// `soilmon enterprises import|list`: the key supervised enterprise registry.
#[derive(clap::Subcommand)]
pub enum EnterprisesCommand {
    /// Import (insert or update) enterprises from a CSV file:
    /// credit_code,name,industry,county_code,lon,lat,points (points ';'-separated, registered;
    /// the credit code is checked against GB 32100). An `enterprise` token named by the
    /// credit code may then upload lab batches for these points only.
    Import {
        /// The CSV file.
        file: std::path::PathBuf,
    },
    /// List the enterprises and their points.
    List,
}

/// Runs one `soilmon enterprises` command.
pub async fn enterprises(settings: &Settings, c: EnterprisesCommand) -> Result<()> {
    match c {
        EnterprisesCommand::Import { file } => {
            let (f, mut client, registry) = super::open_for_import(settings, &file).await?;
            let list =
                soilmon::registry::parse_enterprises_csv(f, &settings.registry.counties, &registry)
                    .with_context(|| format!("reading {}", file.display()))?;
            let n = store::enterprises::upsert(&mut client, &list).await?;
            println!("imported {n} enterprises from {}", file.display());
            Ok(())
        }
        EnterprisesCommand::List => {
            let client = connect(settings).await?;
            let lines: Vec<String> = store::enterprises::list(&client)
                .await?
                .iter()
                .map(|e| {
                    format!(
                        "{}\t{}\t{}\t{}\t{}",
                        e["credit_code"].as_str().unwrap_or(""),
                        e["county_code"].as_str().unwrap_or(""),
                        e["industry"].as_str().unwrap_or(""),
                        e["name"].as_str().unwrap_or(""),
                        e["points"]
                    )
                })
                .collect();
            write_lines(&mut std::io::stdout().lock(), &lines)
        }
    }
}
