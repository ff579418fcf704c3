//! The `soilmon` subcommands, one file per command group, each with its clap types next to
//! its handler. This is the command layer: like `main.rs` it may use `anyhow`, because its
//! errors end as a message on stderr and an exit code; the library modules it calls keep
//! their own `thiserror` enums.

use anyhow::{bail, Context as _, Result};

use soilmon::config::Settings;
use soilmon::store;

pub mod archive;
pub mod bench;
pub mod broker;
pub mod classify;
pub mod network;
pub mod plots;
pub mod points;
pub mod quarantine;
pub mod run;
pub mod stations;
pub mod subscriptions;
pub mod tiers;
pub mod tokens;
pub mod upload;

/// A connection from a fresh pool (no migration).
pub async fn connect(settings: &Settings) -> Result<deadpool_postgres::Object> {
    let pool = store::pool(&settings.database)?;
    pool.get().await.context("connecting to the database")
}

/// A migrated connection for the admin commands.
pub async fn admin_connect(settings: &Settings) -> Result<deadpool_postgres::Object> {
    let mut client = connect(settings).await?;
    store::migrate::run(&mut client).await?;
    Ok(client)
}

/// Writes lines to stdout; a reader that went away (`| head`) ends the output quietly.
pub fn write_lines(out: &mut impl std::io::Write, lines: &[String]) -> Result<()> {
    for l in lines {
        match writeln!(out, "{l}") {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Refuses a county code that is not in `registry.counties`.
pub fn check_counties(settings: &Settings, counties: &[String]) -> Result<()> {
    if let Some(c) = counties
        .iter()
        .find(|c| !settings.registry.counties.contains(c))
    {
        bail!(
            "unknown county {c:?} (registry.counties: {:?})",
            settings.registry.counties
        );
    }
    Ok(())
}

/// What an import of a file that names registered points needs: the file opened, a migrated
/// admin connection and the registered points.
pub async fn open_for_import(
    settings: &Settings,
    file: &std::path::Path,
) -> Result<(
    std::fs::File,
    deadpool_postgres::Object,
    soilmon::registry::Registry,
)> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let client = admin_connect(settings).await?;
    let (points, _) = store::points::load(&client).await?;
    Ok((f, client, soilmon::registry::Registry::new(points)))
}

/// The counties a command covers: those given (checked), or every county of
/// `registry.counties`.
pub fn counties_or_all(settings: &Settings, given: &[String]) -> Result<Vec<String>> {
    check_counties(settings, given)?;
    Ok(if given.is_empty() {
        settings.registry.counties.clone()
    } else {
        given.to_vec()
    })
}
