//! `soilmon stations …` and `soilmon bureaus …`: broker identities (the credential is
//! printed once; the broker files are regenerated after each change).

use anyhow::Result;
use clap::Subcommand;

use soilmon::broker;
use soilmon::config::Settings;
use soilmon::store::identities::{self, IdentityKind};

use super::broker::{broker_sync, print_identities};
use super::{admin_connect, check_counties};

#[derive(Subcommand)]
pub enum StationsCommand {
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
    /// Give a station a new password (printed once); the old one stops working.
    Rotate {
        /// Station id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum BureausCommand {
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
    /// Give a bureau a new password (printed once); the old one stops working.
    Rotate {
        /// Bureau name.
        name: String,
    },
}

/// Runs one `soilmon stations` command.
pub async fn stations(settings: &Settings, c: StationsCommand) -> Result<()> {
    let client = admin_connect(settings).await?;
    match c {
        StationsCommand::Add { id } => {
            broker::check_name(&id, settings)?;
            let secret = broker::new_secret();
            let hashes = broker::hashes(&secret);
            identities::add(&client, &id, IdentityKind::Station, &hashes, &[], false).await?;
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
        StationsCommand::Rotate { id } => {
            rotate(settings, &client, IdentityKind::Station, &id).await
        }
    }
}

/// Runs one `soilmon bureaus` command.
pub async fn bureaus(settings: &Settings, c: BureausCommand) -> Result<()> {
    let client = admin_connect(settings).await?;
    match c {
        BureausCommand::Add {
            name,
            counties,
            all,
        } => {
            broker::check_name(&name, settings)?;
            check_counties(settings, &counties)?;
            let secret = broker::new_secret();
            let hashes = broker::hashes(&secret);
            identities::add(
                &client,
                &name,
                IdentityKind::Bureau,
                &hashes,
                &counties,
                all,
            )
            .await?;
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
        BureausCommand::Rotate { name } => {
            rotate(settings, &client, IdentityKind::Bureau, &name).await
        }
    }
}

/// A new secret for an active identity (both brokers' hashes), printed once; then a sync.
async fn rotate(
    settings: &Settings,
    client: &tokio_postgres::Client,
    kind: IdentityKind,
    name: &str,
) -> Result<()> {
    let secret = broker::new_secret();
    identities::rotate(client, kind, name, &broker::hashes(&secret)).await?;
    println!(
        "{} {name}: new broker password (shown once, stored hashed; the old one no longer works):",
        kind.as_str()
    );
    println!("password: {secret}");
    broker_sync(settings, client).await
}
