//! Deliveries of alert events to subscriptions (`deliveries`): the fan-out from the outbox,
//! claiming, and recording what each attempt came to. Every statement on the table is here.
//!
//! * **Fan-out**: alert rows of the outbox not yet fanned out are read in id order (under a
//!   transaction-level advisory lock, so two instances never fan out side by side and each
//!   subscription's rows keep the outbox order), matched by the caller, and a `pending`
//!   delivery is written per match, in the same transaction that marks the rows fanned out.
//!   Alert events and the console's incident-workflow events are fanned out; each delivery
//!   carries its incident key (`order_key`, point × metal).
//! * **Claim** ([`claim_batches`]): in one statement, per subscription, the heads of up to
//!   its concurrency incident keys that are due and not leased, each with the deliveries
//!   that follow it in its key while they are due and free (a batch, up to its size), read
//!   through the partial index on pending deliveries in outbox order, never the whole
//!   queue; leased (`claimed_until`) and locked `FOR UPDATE SKIP LOCKED`, with claims of
//!   several instances serialised by an advisory lock, so no two instances ever send the
//!   same delivery at once, and each key's deliveries go in order. A subscription of
//!   concurrency 1 has a single key (its whole queue), so it is strictly in order. A lease
//!   that runs out (the instance died mid-delivery) makes the delivery claimable again: at
//!   least once.
//! * **Record** ([`record`]): the outcomes of many deliveries (delivered, retry after a
//!   delay, dead, released unattempted) in one `UPDATE … FROM unnest`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;
use serde_json::Value;
use uuid::Uuid;

use super::{StoreError, CUSTOM_PLAN};

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

/// Fans out up to `limit` alert events: `matcher` makes, from the live subscriptions, the
/// function that gives the ids of the subscriptions an event payload goes to. Does nothing
/// when another instance is fanning out.
pub async fn fan_out<F, M>(
    client: &mut Client,
    limit: i64,
    matcher: F,
) -> Result<Fanout, StoreError>
where
    F: FnOnce(&[FanoutTarget]) -> M,
    M: Fn(&Value) -> Vec<i64>,
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
    let matching = matcher(&targets);
    let (mut subs, mut outbox_ids, mut event_ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut keys = Vec::new();
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.get(0);
        let event_id: Uuid = r.get(1);
        let payload: Value = r.get(2);
        ids.push(id);
        let key = order_key(&payload);
        for s in matching(&payload) {
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

/// An outbox event as its deliveries share it: read once per claim, however many
/// subscriptions' deliveries of it the claim took, and its JSON serialised once.
#[derive(Debug)]
pub struct Event {
    /// The alert payload.
    pub payload: Value,
    /// The payload's JSON as a webhook sends it (`serde_json::to_vec` of `payload`).
    pub json: Vec<u8>,
    /// The point's registered name, if the point is registered.
    pub point_name: Option<String>,
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
    /// Its event (shared with the other deliveries of the event claimed alongside).
    pub event: Arc<Event>,
    /// The key its batch was claimed by: the incident key, or `""` for a subscription of
    /// concurrency 1 (its whole queue is one key).
    pub key: String,
}

/// The claimed rows (`d.id, d.subscription_id, d.outbox_id, d.event_id, d.attempts,
/// d.created_at, key`) with their events, read in one statement (each event once, however
/// many of the rows are its deliveries), in outbox order.
async fn with_events<C: tokio_postgres::GenericClient>(
    client: &C,
    rows: &[tokio_postgres::Row],
) -> Result<Vec<Claimed>, StoreError> {
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(2)).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut events = HashMap::with_capacity(ids.len());
    for r in client
        .query(
            "SELECT o.id, o.payload,
                 (SELECT p.name FROM points p WHERE p.point_id = o.payload->>'point_id')
             FROM outbox o WHERE o.id = ANY($1)",
            &[&ids],
        )
        .await?
    {
        let payload: Value = r.get(1);
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let event = Event {
            payload,
            json,
            point_name: r.get(2),
        };
        events.insert(r.get::<_, i64>(0), Arc::new(event));
    }
    let mut claimed = Vec::with_capacity(rows.len());
    for r in rows {
        let outbox_id: i64 = r.get(2);
        // The foreign key keeps every claimed delivery's outbox row.
        let event = events.get(&outbox_id).cloned().ok_or_else(|| {
            StoreError::Refused(format!("outbox row {outbox_id} of a delivery is gone"))
        })?;
        claimed.push(Claimed {
            id: r.get(0),
            subscription_id: r.get(1),
            outbox_id,
            event_id: r.get(3),
            attempts: r.get(4),
            created_at: r.get(5),
            event,
            key: r.get(6),
        });
    }
    claimed.sort_by_key(|c| c.outbox_id);
    Ok(claimed)
}

/// What a subscription may claim at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimit {
    /// Subscription id.
    pub subscription_id: i64,
    /// Incident keys in flight at once (1: the whole queue is one key, strictly in order).
    pub concurrency: i32,
    /// Most deliveries of one key claimed in one batch.
    pub batch: i32,
}

/// Arbitrary constant identifying the claim lock (distinct from every other advisory lock
/// key of the project: `FANOUT_LOCK`, the overdue check's, the incidents', the outbox's…).
const CLAIM_LOCK: i64 = 0x501_1322;

/// The claim (see [`claim_batches`]). Per live, unpaused subscription not excluded, its
/// oldest `concurrency × batch` pending deliveries are read through the partial index
/// `deliveries_pending (subscription_id, outbox_id) WHERE state = 'pending'` (a LATERAL
/// index scan with a LIMIT: the statement reads that many rows per subscription, never the
/// whole queue). Within them each key's deliveries run from its head (`pos` 1) as long as
/// they are due and not leased (`run`); a key whose head is leased or waiting for its retry
/// sends nothing. The keys with a free head, oldest first, up to the subscription's
/// concurrency minus the keys it has in flight (`busy`), give up to `batch` deliveries
/// each; at most `$1` batches in all, each subscription's first before anyone's second.
const CLAIM: &str = "
WITH subs AS (
    SELECT s.id, coalesce(l.lim, $5) AS lim, coalesce(l.batch, $6) AS batch
    FROM subscriptions s
    LEFT JOIN unnest($4::bigint[], $7::int[], $8::int[]) AS l(sub, lim, batch)
        ON l.sub = s.id
    WHERE s.removed_at IS NULL AND NOT s.paused AND s.id <> ALL($2)
), w AS (
    SELECT s.id AS sub, s.lim, s.batch, y.id, y.outbox_id,
           CASE WHEN s.lim = 1 THEN '' ELSE y.order_key END AS k,
           coalesce(y.claimed_until >= now(), false) AS leased,
           y.next_attempt_at <= now()
               AND (y.claimed_until IS NULL OR y.claimed_until < now()) AS free
    FROM subs s CROSS JOIN LATERAL (
        SELECT y.id, y.outbox_id, y.order_key, y.next_attempt_at, y.claimed_until
        FROM deliveries y
        WHERE y.subscription_id = s.id AND y.state = 'pending'
        ORDER BY y.outbox_id LIMIT s.lim * s.batch) y
), r AS (
    SELECT w.*, bool_and(w.free) OVER k AS run, row_number() OVER k AS pos
    FROM w WINDOW k AS (PARTITION BY w.sub, w.k ORDER BY w.outbox_id)
), heads AS (
    SELECT r.sub, r.k, r.lim, r.outbox_id,
           row_number() OVER (PARTITION BY r.sub ORDER BY r.outbox_id) AS rank
    FROM r WHERE r.pos = 1 AND r.run
), busy AS (
    SELECT w.sub, count(DISTINCT w.k) AS n FROM w WHERE w.leased GROUP BY w.sub
), pick AS (
    SELECT h.sub, h.k FROM heads h LEFT JOIN busy b ON b.sub = h.sub
    WHERE h.rank <= h.lim - coalesce(b.n, 0)
    ORDER BY h.rank, h.outbox_id LIMIT $1
), c AS (
    SELECT x.id, r.k FROM r
    JOIN pick p ON p.sub = r.sub AND p.k = r.k
    JOIN deliveries x ON x.id = r.id
    WHERE r.run AND r.pos <= r.batch AND x.state = 'pending'
      AND (x.claimed_until IS NULL OR x.claimed_until < now())
    FOR UPDATE OF x SKIP LOCKED
)
UPDATE deliveries d
SET claimed_until = now() + make_interval(secs => $3), attempts = d.attempts + 1
FROM c
WHERE d.id = c.id
RETURNING d.id, d.subscription_id, d.outbox_id, d.event_id, d.attempts, d.created_at, c.k";

/// Claims up to `batches` batches of due deliveries of live, unpaused subscriptions not in
/// `exclude`, in one statement: per subscription, the heads of up to its concurrency (its
/// [`ClaimLimit`], else `default_concurrency`) incident keys that are due and not in
/// flight, each with the deliveries that follow it in its key while they are due and free,
/// up to the batch size (else `default_batch`). A subscription of concurrency 1 has one key,
/// its whole queue. Each claimed delivery is leased for `lease`; the rows come back in
/// outbox order, `key` naming their batch. The events are read after the claim, each once
/// (50 subscriptions' deliveries of one alert share one payload, parsed and serialised once).
///
/// Claims are serialised across instances by a transaction-level advisory lock: each
/// statement then sees the leases of the previous one, so two instances never split one
/// key's batch between them (which `SKIP LOCKED` alone could, row by row).
pub async fn claim_batches(
    client: &mut Client,
    batches: i64,
    exclude: &[i64],
    limits: &[ClaimLimit],
    default_concurrency: i32,
    default_batch: i32,
    lease: Duration,
) -> Result<Vec<Claimed>, StoreError> {
    let subs: Vec<i64> = limits.iter().map(|c| c.subscription_id).collect();
    let lims: Vec<i32> = limits.iter().map(|c| c.concurrency).collect();
    let sizes: Vec<i32> = limits.iter().map(|c| c.batch).collect();
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CLAIM_LOCK])
        .await?;
    tx.batch_execute(CUSTOM_PLAN).await?;
    let stmt = tx.prepare_cached(CLAIM).await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &batches,
                &exclude,
                &lease.as_secs_f64(),
                &subs,
                &default_concurrency,
                &default_batch,
                &lims,
                &sizes,
            ],
        )
        .await?;
    let claimed = with_events(&*tx, &rows).await?;
    tx.commit().await?;
    Ok(claimed)
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
        .prepare_cached(
            "UPDATE deliveries d
             SET claimed_until = now() + make_interval(secs => $4), attempts = d.attempts + 1
             WHERE d.id IN (
                 SELECT x.id FROM deliveries x
                 WHERE x.subscription_id = $1 AND x.state = 'pending' AND x.outbox_id > $2
                   AND (x.claimed_until IS NULL OR x.claimed_until < now())
                 ORDER BY x.outbox_id LIMIT $3
                 FOR UPDATE SKIP LOCKED)
             RETURNING d.id, d.subscription_id, d.outbox_id, d.event_id, d.attempts,
                 d.created_at, ''",
        )
        .await?;
    let rows = client
        .query(
            &stmt,
            &[&subscription_id, &after, &limit, &lease.as_secs_f64()],
        )
        .await?;
    with_events(&***client, &rows).await
}

/// What one claimed delivery came to, to record.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    /// The receiver took it.
    Delivered,
    /// Failed: try again after this long.
    Retry {
        /// Back-off (or the receiver's `Retry-After`).
        after: Duration,
        /// What went wrong.
        error: String,
    },
    /// Failed for the last time: dead-lettered.
    Dead {
        /// What went wrong.
        error: String,
    },
    /// Not attempted (a batch stopped early): back in the queue as it was, at once.
    Release,
}

/// Records the outcomes of claimed deliveries, `(delivery id, mark)`, in one statement.
/// A delivery no longer pending (cancelled meanwhile) is left alone. Returns how many rows
/// changed.
pub async fn record(client: &mut Client, marks: &[(i64, Mark)]) -> Result<u64, StoreError> {
    if marks.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(marks.len());
    let mut actions = Vec::with_capacity(marks.len());
    let mut secs: Vec<Option<f64>> = Vec::with_capacity(marks.len());
    let mut errors: Vec<Option<&str>> = Vec::with_capacity(marks.len());
    for (id, m) in marks {
        ids.push(*id);
        let (action, after, error) = match m {
            Mark::Delivered => ("delivered", None, None),
            Mark::Retry { after, error } => ("retry", Some(after.as_secs_f64()), Some(error)),
            Mark::Dead { error } => ("dead", Some(0.0), Some(error)),
            Mark::Release => ("release", None, None),
        };
        actions.push(action);
        secs.push(after);
        errors.push(error.map(String::as_str));
    }
    let tx = client.transaction().await?;
    tx.batch_execute(CUSTOM_PLAN).await?;
    let stmt = tx
        .prepare_cached(
            "UPDATE deliveries d SET
                 state = CASE m.action WHEN 'delivered' THEN 'delivered'
                                       WHEN 'dead' THEN 'dead' ELSE 'pending' END,
                 delivered_at = CASE WHEN m.action = 'delivered' THEN now()
                                     ELSE d.delivered_at END,
                 claimed_until = NULL,
                 last_error = CASE m.action WHEN 'delivered' THEN NULL
                                            WHEN 'release' THEN d.last_error ELSE m.error END,
                 next_attempt_at = CASE WHEN m.action IN ('retry', 'dead')
                                        THEN now() + make_interval(secs => m.secs)
                                        ELSE d.next_attempt_at END,
                 attempts = CASE WHEN m.action = 'release' THEN greatest(d.attempts - 1, 0)
                                 ELSE d.attempts END
             FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::text[])
                 AS m(id, action, secs, error)
             WHERE d.id = m.id AND d.state = 'pending'",
        )
        .await?;
    let n = tx.execute(&stmt, &[&ids, &actions, &secs, &errors]).await?;
    tx.commit().await?;
    Ok(n)
}

/// Gives claimed deliveries back unattempted (their subscription is not loaded yet).
pub async fn release(client: &mut Client, ids: &[i64]) -> Result<(), StoreError> {
    let marks: Vec<(i64, Mark)> = ids.iter().map(|id| (*id, Mark::Release)).collect();
    record(client, &marks).await?;
    Ok(())
}

/// Marks deliveries delivered.
pub async fn mark_delivered(client: &mut Client, ids: &[i64]) -> Result<(), StoreError> {
    let marks: Vec<(i64, Mark)> = ids.iter().map(|id| (*id, Mark::Delivered)).collect();
    record(client, &marks).await?;
    Ok(())
}

/// Records a failed attempt: retried after `retry_in`, or dead-lettered when `None`.
pub async fn mark_failed(
    client: &mut Client,
    ids: &[i64],
    error: &str,
    retry_in: Option<Duration>,
) -> Result<(), StoreError> {
    let mark = match retry_in {
        Some(after) => Mark::Retry {
            after,
            error: error.to_string(),
        },
        None => Mark::Dead {
            error: error.to_string(),
        },
    };
    let marks: Vec<(i64, Mark)> = ids.iter().map(|id| (*id, mark.clone())).collect();
    record(client, &marks).await?;
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
/// subscription and of one bureau's subscriptions, at most `limit`.
pub async fn list(
    client: &Client,
    failed: bool,
    subscription: Option<&str>,
    bureau: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows = client
        .query(
            "SELECT d.id, s.name, d.event_id, d.state, d.attempts, d.next_attempt_at,
                    d.last_error, d.created_at, d.delivered_at
             FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
             WHERE (NOT $1 OR d.state = 'dead') AND ($2::text IS NULL OR s.name = $2)
               AND ($4::text IS NULL OR s.bureau = $4) AND s.removed_at IS NULL
             ORDER BY d.id DESC LIMIT $3",
            &[&failed, &subscription, &limit, &bureau],
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
/// given ids, or every dead one of `subscription`, or every dead one; only those of
/// `bureau`'s subscriptions when it is given. Returns how many.
pub async fn retry(
    client: &Client,
    ids: &[i64],
    subscription: Option<&str>,
    bureau: Option<&str>,
) -> Result<u64, StoreError> {
    Ok(client
        .execute(
            "UPDATE deliveries d SET state = 'pending', attempts = 0, next_attempt_at = now(),
                 created_at = now(), claimed_until = NULL
             FROM subscriptions s
             WHERE s.id = d.subscription_id AND s.removed_at IS NULL AND d.state = 'dead'
               AND (cardinality($1::bigint[]) = 0 OR d.id = ANY($1))
               AND ($2::text IS NULL OR s.name = $2)
               AND ($3::text IS NULL OR s.bureau = $3)",
            &[&ids, &subscription, &bureau],
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
