//! `soilmon points import|list`: the monitoring-point registry.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Subcommand;

use soilmon::config::Settings;
use soilmon::registry::parse_points_file;
use soilmon::store;

use super::{connect, write_lines};

#[derive(Subcommand)]
pub enum PointsCommand {
    /// Import (insert or update) points from a CSV file:
    /// point_id,name,county_code,lon,lat,point_type,land_use,ph[,programs]
    /// (programs: ids of the obligations file, separated by ';')
    Import {
        /// The CSV file.
        file: PathBuf,
    },
    /// List registered points.
    List,
}

/// Runs one `soilmon points` command.
pub async fn dispatch(settings: &Settings, c: PointsCommand) -> Result<()> {
    match c {
        PointsCommand::Import { file } => import_points(settings, &file).await,
        PointsCommand::List => list_points(settings).await,
    }
}

async fn import_points(settings: &Settings, file: &Path) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let obligations = settings.obligations()?;
    let rows = parse_points_file(f, &settings.registry.counties, &obligations)
        .with_context(|| format!("reading {}", file.display()))?;
    let points: Vec<_> = rows.iter().map(|r| r.point.clone()).collect();
    let mut client = connect(settings).await?;
    store::migrate::run(&mut client).await?;
    let n = store::points::upsert(&mut client, &points).await?;
    store::network::set_programs(&client, &rows).await?;
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
