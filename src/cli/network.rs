//! `soilmon coverage` and `soilmon overdue`: the monitoring network against its obligations
//! (`network.obligations_file`).

use anyhow::Result;
use chrono::Utc;
use clap::Args;

use soilmon::config::Settings;
use soilmon::store;

use super::{check_counties, connect, write_lines};

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

fn counties(settings: &Settings, args: &NetworkArgs) -> Result<Vec<String>> {
    check_counties(settings, &args.county)?;
    Ok(if args.county.is_empty() {
        settings.registry.counties.clone()
    } else {
        args.county.clone()
    })
}

/// Prints the coverage table and, per county, the missing required point types.
pub async fn coverage(settings: &Settings, args: &NetworkArgs) -> Result<()> {
    let obligations = settings.obligations()?;
    let counties = counties(settings, args)?;
    let client = connect(settings).await?;
    let report = store::network::coverage(&client, &obligations, &counties, Utc::now()).await?;
    if args.json {
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
    let counties = counties(settings, args)?;
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
