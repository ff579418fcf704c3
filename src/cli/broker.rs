//! `soilmon broker sync`, and the broker-file regeneration the identity commands share.

use anyhow::Result;
use clap::Subcommand;

use soilmon::broker;
use soilmon::config::Settings;
use soilmon::store::identities::{self, IdentityKind};

use super::{admin_connect, write_lines};

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Write broker.password_file and broker.acl_file from the database, then run
    /// broker.reload_command.
    Sync,
}

/// Runs one `soilmon broker` command.
pub async fn dispatch(settings: &Settings, c: BrokerCommand) -> Result<()> {
    match c {
        BrokerCommand::Sync => {
            let client = admin_connect(settings).await?;
            broker_sync(settings, &client).await
        }
    }
}

/// Regenerates the broker files and reloads the broker, printing what was done.
pub async fn broker_sync(settings: &Settings, client: &tokio_postgres::Client) -> Result<()> {
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

/// Prints one line per identity: name, state, creation time, counties (bureaus).
pub fn print_identities(ids: &[identities::Identity]) -> Result<()> {
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
