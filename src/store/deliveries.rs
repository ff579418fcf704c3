//! Deliveries of alert events to subscriptions (`deliveries`): the fan-out from the outbox,
//! claiming, and recording what each attempt came to. Every statement on the table is here.
//!
//! * **Fan-out**: alert rows of the outbox not yet fanned out are read in id order (under a
//!   transaction-level advisory lock, so two instances never fan out side by side and each
//!   subscription's rows keep the outbox order), matched by the caller, and a `pending`
//!   delivery is written per match, in the same transaction that marks the rows fanned out.
//!   Alert events and the console's incident-workflow events are fanned out; each delivery
//!   carries its incident key (`order_key`, point × metal).
//! * **Claim**: the oldest pending delivery of each (subscription, incident key) that is due
//!   and not leased, up to the subscription's concurrency minus what it has in flight,
//!   locked `FOR UPDATE SKIP LOCKED` and leased (`claimed_until`), so several instances
//!   never send the same delivery at once, and each key's deliveries go one at a time, in
//!   order. A subscription of concurrency 1 has a single key (its whole queue), so it is
//!   strictly in order. A lease that runs out (the instance died mid-delivery) makes the
//!   delivery claimable again: at least once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;
use serde_json::Value;
use uuid::Uuid;

use super::StoreError;

/// Arbitrary constant identifying the fan-out lock.
const FANOUT_LOCK: i64 = 0x501_1314;

/// A subscription as the fan-out sees it.
#[derive(Debug, Clone)]
pub struct FanoutTarget {
    /// Subscription id.
    pub id: i64,
    /// Its filters (JSON).
    pub filters: Value,
    /// Its bureau's counties.
    pub counties: Vec<String>,
    /// Its bureau is city-wide.
    pub all_counties: bool,
}

/// What one fan-out round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fanout {
    /// Alert events matched.
    pub events: usize,
    /// Deliveries written.
    pub deliveries: usize,
}

/// Fans out up to `limit` alert events: `matching` gives, for the subscriptions and one
/// event payload, the ids of the subscriptions that get it. Does nothing when another
/// instance is fanning out.
pub async fn fan_out<F>(client: &mut Client, limit: i64, matching: F) -> Result<Fanout, StoreError>
where
    F: Fn(&[FanoutTarget], &Value) -> Vec<i64>,
{
    let tx = client.transaction().await?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FANOUT_LOCK])
        .await?
        .get(0);
    if !locked {
        return Ok(Fanout::default());
    }
    let rows = tx
        .query(
            "SELECT id, event_id, payload FROM outbox
             WHERE fanned_out_at IS NULL AND kind IN ('alert', 'incident_action')
             ORDER BY id LIMIT $1",
            &[&limit],
        )
        .await?;
    if rows.is_empty() {
        return Ok(Fanout::default());
    }
    let targets: Vec<FanoutTarget> = tx
        .query(
            "SELECT s.id, s.filters, b.counties, b.all_counties
             FROM subscriptions s JOIN broker_identities b ON b.username = s.bureau
             WHERE s.removed_at IS NULL AND b.revoked_at IS NULL ORDER BY s.id",
            &[],
        )
        .await?
        .iter()
        .map(|r| FanoutTarget {
            id: r.get(0),
            filters: r.get(1),
            counties: r.get(2),
            all_counties: r.get(3),
        })
        .collect();
    let (mut subs, mut outbox_ids, mut event_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut keys = Vec::new();
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.get(0);
        let event_id: Uuid = r.get(1);
        let payload: Value = r.get(2);
        ids.push(id);
        let key = order_key(&payload);
        for s in matching(&targets, &payload) {
            subs.push(s);
            outbox_ids.push(id);
            event_ids.push(event_id);
            keys.push(key.clone());
        }
    }
    tx.execute(
        "INSERT INTO deliveries (subscription_id, outbox_id, event_id, order_key)
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[], $4::text[])
         ON CONFLICT (subscription_id, event_id) DO NOTHING",
        &[&subs, &outbox_ids, &event_ids, &keys],
    )
    .await?;
    tx.execute(
        "UPDATE outbox SET fanned_out_at = now() WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    tx.commit().await?;
    Ok(Fanout {
        events: ids.len(),
        deliveries: subs.len(),
    })
}

/// The incident key of an event: `point|metal` (`point|` for an overdue point).
pub fn order_key(payload: &Value) -> String {
    let field = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("");
    format!("{}|{}", field("point_id"), field("metal"))
}

/// A claimed delivery, leased to this instance.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Delivery id.
    pub id: i64,
    /// Subscription id.
    pub subscription_id: i64,
    /// Outbox row (delivery order).
    pub outbox_id: i64,
    /// The event's stable id.
    pub event_id: Uuid,
    /// Attempts including this one.
    pub attempts: i32,
    /// When the delivery was created (its age decides dead-lettering).
    pub created_at: DateTime<Utc>,
    /// The alert payload.
    pub payload: Value,
    /// The point's registered name, if the point is registered.
    pub point_name: Option<String>,
}

const CLAIMED: &str = "RETURNING d.id, d.subscription_id, d.outbox_id, d.event_id, d.attempts,
        d.created_at, o.payload,
        (SELECT p.name FROM points p WHERE p.point_id = o.payload->>'point_id')";

fn claimed(r: &tokio_postgres::Row) -> Claimed {
    Claimed {
        id: r.get(0),
        subscription_id: r.get(1),
        outbox_id: r.get(2),
        event_id: r.get(3),
        attempts: r.get(4),
        created_at: r.get(5),
        payload: r.get(6),
        point_name: r.get(7),
    }
}

/// How many deliveries a subscription may have in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concurrency {
    /// Subscription id.
    pub subscription_id: i64,
    /// At most this many leased at once (1: strictly in order).
    pub limit: i32,
}

/// Claims up to `limit` due deliveries of live, unpaused subscriptions not in `exclude`:
/// the head (oldest pending) of each incident key, as many per subscription as its
/// concurrency (`per_subscription`, else `default_limit`) leaves free after what is already
/// leased; a subscription of concurrency 1 has one head in all. Each is leased for `lease`.
pub async fn claim_heads(
    client: &Client,
    limit: i64,
    exclude: &[i64],
    per_subscription: &[Concurrency],
    default_limit: i32,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE deliveries d
             SET claimed_until = now() + make_interval(secs => $3), attempts = d.attempts + 1
             FROM outbox o
             WHERE o.id = d.outbox_id AND d.id IN (
                 SELECT x.id FROM deliveries x
                 WHERE x.state = 'pending'
                   AND (x.claimed_until IS NULL OR x.claimed_until < now())
                   AND x.id IN (
                       SELECT c.id FROM (
                           SELECT h.id, h.next_attempt_at, h.lim, row_number() OVER (
                                  PARTITION BY h.subscription_id ORDER BY h.outbox_id) AS rn,
                              (SELECT count(*) FROM deliveries z
                               WHERE z.subscription_id = h.subscription_id
                                 AND z.state = 'pending' AND z.claimed_until >= now()) AS leased
                           FROM (
                               SELECT DISTINCT ON (y.subscription_id,
                                      CASE WHEN coalesce(l.lim, $5) = 1 THEN '' ELSE y.order_key END)
                                   y.id, y.subscription_id, y.outbox_id, y.next_attempt_at,
                                   y.claimed_until, coalesce(l.lim, $5) AS lim
                               FROM deliveries y
                               JOIN subscriptions s ON s.id = y.subscription_id
                               LEFT JOIN unnest($4::bigint[], $6::int[]) AS l(sub, lim)
                                   ON l.sub = y.subscription_id
                               WHERE y.state = 'pending' AND s.removed_at IS NULL
                                 AND NOT s.paused AND s.id <> ALL($2)
                               ORDER BY y.subscription_id,
                                   CASE WHEN coalesce(l.lim, $5) = 1 THEN '' ELSE y.order_key END,
                                   y.outbox_id) h
                           WHERE h.next_attempt_at <= now()
                             AND (h.claimed_until IS NULL OR h.claimed_until < now())) c
                       WHERE c.rn <= c.lim - c.leased
                       ORDER BY c.next_attempt_at LIMIT $1)
                 FOR UPDATE OF x SKIP LOCKED)
             {CLAIMED}"
        ))
        .await?;
    let subs: Vec<i64> = per_subscription.iter().map(|c| c.subscription_id).collect();
    let limits: Vec<i32> = per_subscription.iter().map(|c| c.limit).collect();
    let rows = client
        .query(
            &stmt,
            &[
                &limit,
                &exclude,
                &lease.as_secs_f64(),
                &subs,
                &default_limit,
                &limits,
            ],
        )
        .await?;
    Ok(rows.iter().map(claimed).collect())
}

/// Claims up to `limit` more pending deliveries of one subscription after outbox row
/// `after` (to fold them into one robot message with the head already claimed, or to
/// gather a digest: `after` 0).
pub async fn claim_following(
    client: &Client,
    subscription_id: i64,
    after: i64,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "UPDATE deliveries d
             SET claimed_until = now() + make_interval(secs => $4), attempts = d.attempts + 1
             FROM outbox o
             WHERE o.id = d.outbox_id AND d.id IN (
                 SELECT x.id FROM deliveries x
                 WHERE x.subscription_id = $1 AND x.state = 'pending' AND x.outbox_id > $2
                   AND (x.claimed_until IS NULL OR x.claimed_until < now())
                 ORDER BY x.outbox_id LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             {CLAIMED}"
        ))
        .await?;
    let mut rows: Vec<Claimed> = client
        .query(
            &stmt,
            &[&subscription_id, &after, &limit, &lease.as_secs_f64()],
        )
        .await?
        .iter()
        .map(claimed)
        .collect();
    rows.sort_by_key(|c| c.outbox_id);
    Ok(rows)
}

/// Gives claimed deliveries back unattempted (their subscription is not loaded yet).
pub async fn release(client: &Client, ids: &[i64]) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries SET claimed_until = NULL, attempts = greatest(attempts - 1, 0)
             WHERE id = ANY($1) AND state = 'pending'",
        )
        .await?;
    client.execute(&stmt, &[&ids]).await?;
    Ok(())
}

/// Marks deliveries delivered.
pub async fn mark_delivered(client: &Client, ids: &[i64]) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries SET state = 'delivered', delivered_at = now(),
                 claimed_until = NULL, last_error = NULL
             WHERE id = ANY($1) AND state = 'pending'",
        )
        .await?;
    client.execute(&stmt, &[&ids]).await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in`, or dead-lettered when `None`.
pub async fn mark_failed(
    client: &Client,
    ids: &[i64],
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(
            "UPDATE deliveries SET claimed_until = NULL, last_error = $2,
                 state = CASE WHEN $3::float8 IS NULL THEN 'dead' ELSE 'pending' END,
                 next_attempt_at = now() + make_interval(secs => coalesce($3, 0))
             WHERE id = ANY($1) AND state = 'pending'",
        )
        .await?;
    let secs = retry_in.map(|d| d.as_secs_f64());
    client.execute(&stmt, &[&ids, &error, &secs]).await?;
    Ok(())
}

/// One delivery as `soilmon deliveries list` shows it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// Subscription name.
    pub subscription: String,
    /// The event's id.
    pub event_id: Uuid,
    /// `pending`, `delivered`, `dead` or `cancelled`.
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// Next attempt (pending).
    pub next_attempt_at: DateTime<Utc>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The newest deliveries (only dead-lettered ones with `failed`), optionally of one
/// subscription, at most `limit`.
pub async fn list(
    client: &Client,
    failed: bool,
    subscription: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = client
        .query(
            "SELECT d.id, s.name, d.event_id, d.state, d.attempts, d.next_attempt_at,
                    d.last_error, d.created_at, d.delivered_at
             FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
             WHERE (NOT $1 OR d.state = 'dead') AND ($2::text IS NULL OR s.name = $2)
               AND s.removed_at IS NULL
             ORDER BY d.id DESC LIMIT $3",
            &[&failed, &subscription, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeliveryRow {
            id: r.get(0),
            subscription: r.get(1),
            event_id: r.get(2),
            state: r.get(3),
            attempts: r.get(4),
            next_attempt_at: r.get(5),
            last_error: r.get(6),
            created_at: r.get(7),
            delivered_at: r.get(8),
        })
        .collect())
}

/// Puts dead-lettered deliveries back in the queue (attempts and age start again): the
/// given ids, or every dead one of `subscription`, or every dead one. Returns how many.
pub async fn retry(
    client: &Client,
    ids: &[i64],
    subscription: Option<&str>,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "UPDATE deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now(),
                 created_at = now(), claimed_until = NULL
             FROM subscriptions s
             WHERE s.id = d.subscription_id AND s.removed_at IS NULL AND d.state = 'dead'
               AND (cardinality($1::bigint[]) = 0 OR d.id = ANY($1))
               AND ($2::text IS NULL OR s.name = $2)",
            &[&ids, &subscription],
        )
        .await?)
}

/// Queue depth and the age of the oldest pending delivery (seconds) per live subscription.
pub async fn queue_stats(client: &Client) -> Result<Vec<(String, i64, f64)>, StoreError> {
    let rows = client
        .query(
            "SELECT s.name, count(d.id),
                    coalesce(extract(epoch FROM now() - min(d.created_at))::float8, 0)
             FROM subscriptions s
             LEFT JOIN deliveries d ON d.subscription_id = s.id AND d.state = 'pending'
             WHERE s.removed_at IS NULL GROUP BY s.name",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
