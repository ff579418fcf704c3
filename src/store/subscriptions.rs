//! Alert subscriptions of bureaus (`subscriptions`), managed by `soilmon subscriptions`.
//!
//! A subscription belongs to a bureau broker identity ([`super::identities`]); a revoked
//! bureau's subscriptions receive nothing. Removing one keeps the row (`removed_at`, for the
//! deliveries that refer to it) and cancels its pending deliveries. Filters and channel
//! options are JSON, checked by the delivery layer before they are stored.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Client;

use super::StoreError;

/// One live subscription, with its bureau's scope and its queue.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Id (deliveries refer to it).
    pub id: i64,
    /// Unique name among live subscriptions.
    pub name: String,
    /// Owning bureau (broker identity username).
    pub bureau: String,
    /// `webhook`, `dingtalk` or `wecom`.
    pub channel: String,
    /// The webhook URL, or the robot URL with its token redacted.
    pub target: String,
    /// Channel options (headers, timeout_ms, ca_file).
    pub options: Value,
    /// Filters (counties, metals, levels, states, sources, land_class).
    pub filters: Value,
    /// Paused: deliveries queue up and wait.
    pub paused: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The bureau's counties (empty when city-wide).
    pub bureau_counties: Vec<String>,
    /// The bureau is city-wide.
    pub bureau_all: bool,
    /// The bureau identity is revoked (nothing is fanned out to it).
    pub bureau_revoked: bool,
    /// Deliveries waiting.
    pub pending: i64,
    /// Dead-lettered deliveries.
    pub dead: i64,
}

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct NewSubscription<'a> {
    /// Name.
    pub name: &'a str,
    /// Owning bureau.
    pub bureau: &'a str,
    /// Channel.
    pub channel: &'a str,
    /// URL (redacted for robots).
    pub target: &'a str,
    /// Channel options.
    pub options: &'a Value,
    /// Filters, already checked.
    pub filters: &'a Value,
}

/// The columns [`from_row`] reads: these, then the queue counts ([`COUNTS`]).
const COLUMNS: &str = "SELECT s.id, s.name, s.bureau, s.channel, s.target, s.options, s.filters,
        s.paused, s.created_at, b.counties, b.all_counties, b.revoked_at IS NOT NULL";
/// The pending and dead deliveries of the subscription.
const COUNTS: &str =
    "(SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.id AND d.state = 'pending'),
     (SELECT count(*) FROM deliveries d WHERE d.subscription_id = s.id AND d.state = 'dead')";
/// The live subscriptions with their bureaus.
const FROM: &str = "FROM subscriptions s JOIN broker_identities b ON b.username = s.bureau
     WHERE s.removed_at IS NULL";

fn from_row(r: &tokio_postgres::Row) -> Subscription {
    Subscription {
        id: r.get(0),
        name: r.get(1),
        bureau: r.get(2),
        channel: r.get(3),
        target: r.get(4),
        options: r.get(5),
        filters: r.get(6),
        paused: r.get(7),
        created_at: r.get(8),
        bureau_counties: r.get(9),
        bureau_all: r.get(10),
        bureau_revoked: r.get(11),
        pending: r.get(12),
        dead: r.get(13),
    }
}

/// A live subscription with its queue, as `soilmon subscriptions list`, the admin API and
/// the console show it.
#[derive(Debug, Clone)]
pub struct Overview {
    /// The subscription (with its pending and dead counts).
    pub sub: Subscription,
    /// When the oldest pending delivery was created (or put back by a retry).
    pub oldest_pending: Option<DateTime<Utc>>,
    /// The newest failure among its pending and dead-lettered deliveries.
    pub last_error: Option<String>,
}

/// Live subscriptions with their queues, by name. The two extra columns read the partial
/// indexes of pending and dead deliveries only (`deliveries_pending`, `deliveries_dead`).
pub async fn overview(client: &Client) -> Result<Vec<Overview>, StoreError> {
    let sql = format!(
        "{COLUMNS}, {COUNTS},
        (SELECT min(d.created_at) FROM deliveries d
          WHERE d.subscription_id = s.id AND d.state = 'pending'),
        coalesce(
          (SELECT d.last_error FROM deliveries d
            WHERE d.subscription_id = s.id AND d.state = 'pending' AND d.last_error IS NOT NULL
            ORDER BY d.outbox_id LIMIT 1),
          (SELECT d.last_error FROM deliveries d
            WHERE d.subscription_id = s.id AND d.state = 'dead'
            ORDER BY d.id DESC LIMIT 1))
     {FROM} ORDER BY s.name"
    );
    let rows = client.query(&sql, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Overview {
            sub: from_row(r),
            oldest_pending: r.get(14),
            last_error: r.get(15),
        })
        .collect())
}

/// The bureau's scope: `(counties, all_counties)`, refused unless it is an active bureau.
pub async fn bureau_scope(
    client: &Client,
    bureau: &str,
) -> Result<(Vec<String>, bool), StoreError> {
    let row = client
        .query_opt(
            "SELECT counties, all_counties FROM broker_identities
             WHERE username = $1 AND kind = 'bureau' AND revoked_at IS NULL",
            &[&bureau],
        )
        .await?
        .ok_or_else(|| {
            StoreError::Refused(format!(
                "no active bureau {bureau:?} (create it with `soilmon bureaus add`)"
            ))
        })?;
    Ok((row.get(0), row.get(1)))
}

/// Creates a subscription; refused when a live one has the name.
pub async fn add(client: &Client, s: &NewSubscription<'_>) -> Result<i64, StoreError> {
    let row = client
        .query_opt(
            "INSERT INTO subscriptions (name, bureau, channel, target, options, filters)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM subscriptions WHERE name = $1 AND removed_at IS NULL)
             RETURNING id",
            &[
                &s.name, &s.bureau, &s.channel, &s.target, s.options, s.filters,
            ],
        )
        .await?;
    match row {
        Some(r) => Ok(r.get(0)),
        None => Err(StoreError::Refused(format!(
            "subscription {:?} already exists",
            s.name
        ))),
    }
}

/// Live subscriptions, by name.
pub async fn list(client: &Client) -> Result<Vec<Subscription>, StoreError> {
    let rows = client
        .query(&format!("{COLUMNS}, {COUNTS} {FROM} ORDER BY s.name"), &[])
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// The live subscriptions with their bureaus, as [`list`] without the queue counts (their
/// `pending` and `dead` are 0): what the delivery engine re-reads every
/// `deliver.refresh_secs`, so that it never counts a long queue on its own path.
pub async fn list_to_send(client: &Client) -> Result<Vec<Subscription>, StoreError> {
    let rows = client
        .query(&format!("{COLUMNS}, 0::bigint, 0::bigint {FROM}"), &[])
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// One live subscription by name.
pub async fn get(client: &Client, name: &str) -> Result<Subscription, StoreError> {
    client
        .query_opt(
            &format!("{COLUMNS}, {COUNTS} {FROM} AND s.name = $1"),
            &[&name],
        )
        .await?
        .map(|r| from_row(&r))
        .ok_or_else(|| StoreError::Refused(format!("no subscription {name:?}")))
}

/// Pauses or resumes a subscription.
pub async fn set_paused(client: &Client, name: &str, paused: bool) -> Result<(), StoreError> {
    let n = client
        .execute(
            "UPDATE subscriptions SET paused = $2 WHERE name = $1 AND removed_at IS NULL",
            &[&name, &paused],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Refused(format!("no subscription {name:?}")));
    }
    Ok(())
}

/// Removes a subscription and cancels its pending deliveries; returns how many were
/// cancelled.
pub async fn remove(client: &mut Client, name: &str) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    let id: i64 = tx
        .query_opt(
            "UPDATE subscriptions SET removed_at = now() WHERE name = $1 AND removed_at IS NULL
             RETURNING id",
            &[&name],
        )
        .await?
        .ok_or_else(|| StoreError::Refused(format!("no subscription {name:?}")))?
        .get(0);
    let n = tx
        .execute(
            "UPDATE deliveries SET state = 'cancelled', last_error = 'subscription removed'
             WHERE subscription_id = $1 AND state IN ('pending', 'dead')",
            &[&id],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}
