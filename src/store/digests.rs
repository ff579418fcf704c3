//! Daily digests and reminders of subscriptions: which slot was sent last
//! (`subscriptions.digest_sent_at`), the lease of a digest being sent
//! (`subscriptions.digest_claimed_until`, also the retry delay after a failure), and the
//! incidents still open. The pending deliveries a digest carries are claimed with
//! [`super::deliveries::claim_following`] and recorded like any other.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;
use uuid::Uuid;

use super::StoreError;

/// Leases the digest of subscription `id` for `lease`, if its last sent slot is still
/// `sent_at` and no instance holds (or waits to retry) it. Whether this instance got it.
pub async fn claim(
    client: &Client,
    id: i64,
    sent_at: Option<DateTime<Utc>>,
    lease: Duration,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "UPDATE subscriptions SET digest_claimed_until = now() + make_interval(secs => $3)
             WHERE id = $1 AND removed_at IS NULL AND NOT paused
               AND digest_sent_at IS NOT DISTINCT FROM $2
               AND (digest_claimed_until IS NULL OR digest_claimed_until < now())",
            &[&id, &sent_at, &lease.as_secs_f64()],
        )
        .await?;
    Ok(n == 1)
}

/// Records the digest of slot `slot` as sent.
pub async fn sent(client: &Client, id: i64, slot: DateTime<Utc>) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE subscriptions SET digest_sent_at = $2, digest_claimed_until = NULL
             WHERE id = $1",
            &[&id, &slot],
        )
        .await?;
    Ok(())
}

/// Holds a failed digest back for `retry_in` (it stays due).
pub async fn failed(client: &Client, id: i64, retry_in: Duration) -> Result<(), StoreError> {
    client
        .execute(
            "UPDATE subscriptions
             SET digest_claimed_until = now() + make_interval(secs => $2) WHERE id = $1",
            &[&id, &retry_in.as_secs_f64()],
        )
        .await?;
    Ok(())
}

/// The last digest slot sent by each live subscription (`None`: none yet).
pub async fn last_sent(client: &Client) -> Result<Vec<(i64, Option<DateTime<Utc>>)>, StoreError> {
    let rows = client
        .query(
            "SELECT id, digest_sent_at FROM subscriptions WHERE removed_at IS NULL",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// An incident still open.
#[derive(Debug, Clone)]
pub struct OpenIncident {
    /// Incident id.
    pub incident_id: Uuid,
    /// Point id.
    pub point_id: String,
    /// The point's registered name.
    pub point_name: Option<String>,
    /// County code.
    pub county_code: String,
    /// Metal symbol.
    pub metal: String,
    /// `screening` / `intervention`.
    pub level: String,
    /// The point's land use (`paddy`, `development_first`, …), if registered.
    pub land_use: Option<String>,
    /// When the first exceeding sample was taken.
    pub opened_sampled_at: DateTime<Utc>,
}

/// The open incidents of `counties` (all when `None`), oldest first, at most `limit`.
pub async fn open_incidents(
    client: &Client,
    counties: Option<&[String]>,
    limit: i64,
) -> Result<Vec<OpenIncident>, StoreError> {
    let rows = client
        .query(
            "SELECT i.incident_id, i.point_id, p.name, i.county_code, i.metal, i.level,
                    p.land_use, i.opened_sampled_at
             FROM incidents i LEFT JOIN points p USING (point_id)
             WHERE i.state = 'open' AND ($1::text[] IS NULL OR i.county_code = ANY($1))
             ORDER BY i.opened_sampled_at, i.point_id, i.metal LIMIT $2",
            &[&counties, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| OpenIncident {
            incident_id: r.get(0),
            point_id: r.get(1),
            point_name: r.get(2),
            county_code: r.get(3),
            metal: r.get(4),
            level: r.get(5),
            land_use: r.get(6),
            opened_sampled_at: r.get(7),
        })
        .collect())
}
