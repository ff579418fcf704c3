//! Broker identities (stations and bureaus) in the `broker_identities` table.
//!
//! Only hashes of each secret are stored: Mosquitto's, and (since schema 23) RabbitMQ's. Revoking keeps the row (for the
//! audit trail) with `revoked_at` set; revoked identities are left out of the generated
//! broker files. Adding a revoked name again re-activates it with a new secret.

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::StoreError;

/// What an identity may do on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    /// A field station: publishes its own readings, reads its own rejects.
    Station,
    /// A bureau: reads the alerts of its counties.
    Bureau,
}

impl IdentityKind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::Station => "station",
            IdentityKind::Bureau => "bureau",
        }
    }
}

/// One broker identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Broker username (the station id for a station).
    pub username: String,
    /// Station or bureau.
    pub kind: IdentityKind,
    /// Mosquitto `$7$` password hash.
    pub password_hash: String,
    /// RabbitMQ `rabbit_password_hashing_sha256` hash; `None` for identities created before
    /// schema 23 (rotate them to use them on RabbitMQ).
    pub rabbitmq_password_hash: Option<String>,
    /// Counties a bureau may read (empty for stations and city-wide bureaus).
    pub counties: Vec<String>,
    /// A city-wide bureau (every county).
    pub all_counties: bool,
    /// When it was (re)created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

fn from_row(r: &tokio_postgres::Row) -> Identity {
    let kind: &str = r.get(1);
    Identity {
        username: r.get(0),
        kind: if kind == "bureau" {
            IdentityKind::Bureau
        } else {
            IdentityKind::Station
        },
        password_hash: r.get(2),
        counties: r.get(3),
        all_counties: r.get(4),
        created_at: r.get(5),
        revoked_at: r.get(6),
        rabbitmq_password_hash: r.get(7),
    }
}

const COLUMNS: &str = "username, kind, password_hash, counties, all_counties, created_at, \
                       revoked_at, rabbitmq_password_hash";

/// The stored hashes of one secret, one per broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashes {
    /// Mosquitto `$7$` hash.
    pub mosquitto: String,
    /// RabbitMQ `rabbit_password_hashing_sha256` hash.
    pub rabbitmq: String,
}

/// Inserts a new identity, or re-activates a revoked one of the same kind with the new hashes
/// and counties. Refused when the name is in use.
pub async fn add(
    client: &Client,
    username: &str,
    kind: IdentityKind,
    hashes: &Hashes,
    counties: &[String],
    all_counties: bool,
) -> Result<(), StoreError> {
    let n = client
        .execute(
            "INSERT INTO broker_identities
                 (username, kind, password_hash, rabbitmq_password_hash, counties, all_counties)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (username) DO UPDATE SET
                 password_hash = EXCLUDED.password_hash,
                 rabbitmq_password_hash = EXCLUDED.rabbitmq_password_hash,
                 counties = EXCLUDED.counties,
                 all_counties = EXCLUDED.all_counties, created_at = now(), revoked_at = NULL
             WHERE broker_identities.revoked_at IS NOT NULL
               AND broker_identities.kind = EXCLUDED.kind",
            &[
                &username,
                &kind.as_str(),
                &hashes.mosquitto,
                &hashes.rabbitmq,
                &counties,
                &all_counties,
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Refused(format!(
            "broker identity {username:?} already exists"
        )));
    }
    Ok(())
}

/// Identities of `kind` (all kinds when `None`), revoked ones included, by name.
pub async fn list(
    client: &Client,
    kind: Option<IdentityKind>,
) -> Result<Vec<Identity>, StoreError> {
    let kind = kind.map(IdentityKind::as_str);
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM broker_identities
                 WHERE ($1::text IS NULL OR kind = $1) ORDER BY username"
            ),
            &[&kind],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Identities not revoked, by name (what the broker files contain).
pub async fn active(client: &Client) -> Result<Vec<Identity>, StoreError> {
    Ok(list(client, None)
        .await?
        .into_iter()
        .filter(|i| i.revoked_at.is_none())
        .collect())
}

/// Ok when a statement changed the one active identity of `kind` named `username`, else the
/// refusal naming it.
fn one_active(changed: u64, kind: IdentityKind, username: &str) -> Result<(), StoreError> {
    if changed == 0 {
        return Err(StoreError::Refused(format!(
            "no active {} {username:?}",
            kind.as_str()
        )));
    }
    Ok(())
}

/// Revokes an active identity of `kind`; refused when there is none by that name.
pub async fn revoke(client: &Client, kind: IdentityKind, username: &str) -> Result<(), StoreError> {
    let n = client
        .execute(
            "UPDATE broker_identities SET revoked_at = now()
             WHERE username = $1 AND kind = $2 AND revoked_at IS NULL",
            &[&username, &kind.as_str()],
        )
        .await?;
    one_active(n, kind, username)
}

/// Gives an active identity of `kind` a new secret (both hashes replaced; counties kept);
/// refused when there is none by that name.
pub async fn rotate(
    client: &Client,
    kind: IdentityKind,
    username: &str,
    hashes: &Hashes,
) -> Result<(), StoreError> {
    let n = client
        .execute(
            "UPDATE broker_identities SET password_hash = $3, rabbitmq_password_hash = $4
             WHERE username = $1 AND kind = $2 AND revoked_at IS NULL",
            &[
                &username,
                &kind.as_str(),
                &hashes.mosquitto,
                &hashes.rabbitmq,
            ],
        )
        .await?;
    one_active(n, kind, username)
}
