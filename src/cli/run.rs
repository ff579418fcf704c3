//! `soilmon run`, `soilmon migrate` and `soilmon check-config`.

use std::sync::Arc;

use anyhow::Result;
use tracing::info;

use soilmon::config::Settings;
use soilmon::{service, store};

use super::connect;

/// Runs the service until SIGINT/SIGTERM (or until the collector stops with an error).
pub async fn run(settings: Arc<Settings>) -> Result<()> {
    let handle = service::start(settings)?;
    let shutdown = handle.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown requested");
        shutdown.cancel();
    });
    handle.wait().await?;
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

/// Applies the database migrations and prints what was done.
pub async fn migrate(settings: &Settings) -> Result<()> {
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

/// Loads and checks the configuration and standards files and prints a summary.
pub fn check_config(settings: &Settings) -> Result<()> {
    let standards = settings.standards()?;
    let obligations = settings.obligations()?;
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
    println!(
        "  obligations {} ({}): {} programs, {} obligations",
        obligations.id,
        obligations.version,
        obligations.programs.len(),
        obligations.obligations.len()
    );
    Ok(())
}
