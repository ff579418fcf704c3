//! The outbox: MQTT publications (alert events, reject replies) queued in the same
//! transaction as the data they describe, read and marked published by the alert publisher.
//! Every statement on the `outbox` table is here.
//!
//! A row's `payload` is `json` (schema 27): the text as it was written, which is what the
//! publisher sends, byte for byte; the incident an event concerns is also a column
//! (`incident_id`), for the one query that looks events up by it.
//!
//! A row is written once. What is still to publish is the narrow queue `outbox_pending`
//! (ids only, filled by a trigger on every insert into `outbox`, schema 24): the publisher
//! reads the oldest queued ids joined to their rows and deletes the ids once the broker
//! acknowledged them, instead of rewriting each ~1 kB row to mark it.
//!
//! Any number of soilmon instances may run a publisher on one database. A publishing round
//! is one transaction that first takes the outbox lock ([`lead_and_read`], a
//! transaction-level advisory lock): the instance that gets it publishes the oldest rows and
//! marks them in that transaction; the others skip the round. So rounds never overlap, rows
//! leave in id order whichever instance runs, and order per alert topic holds without any
//! per-topic bookkeeping. An instance that dies mid-round loses the lock with its
//! connection; the next round (any instance) publishes its unmarked rows again (at least
//! once: subscribers deduplicate by `event_id`).

use deadpool_postgres::{Client, Transaction};

use serde_json::Value;
use uuid::Uuid;

use super::StoreError;

/// For the rest of the publisher's round: no sequential scans, so the queue and the outbox
/// are read by their primary keys (see [`lead_and_read`]).
const QUEUE_BY_INDEX: &str = "SET LOCAL enable_seqscan = off";

/// The advisory lock key of the outbox (the ASCII bytes of `soilmon`, then `1`).
const OUTBOX_LOCK: i64 = 0x736f_696c_6d6f_6e01;

/// Queues one MQTT publication in the outbox (published by the alert publisher). Its
/// `incident_id` column is the payload's `incident_id`, if it has one.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    event_id: Uuid,
    kind: &str,
    topic: &str,
    payload: &Value,
) -> Result<(), StoreError> {
    let incident_id = incident_of(payload);
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (event_id, kind, topic, payload, incident_id)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    tx.execute(&stmt, &[&event_id, &kind, &topic, payload, &incident_id])
        .await?;
    Ok(())
}

/// The `incident_id` of an event payload, when it has one that is a UUID.
fn incident_of(payload: &Value) -> Option<Uuid> {
    payload
        .get("incident_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// An alert event to queue ([`insert_alerts`]).
#[derive(Debug, Clone)]
pub(crate) struct NewAlert {
    /// The event's id (also in the payload).
    pub(crate) event_id: Uuid,
    /// The incident it concerns (also in the payload), if any.
    pub(crate) incident_id: Option<Uuid>,
    /// MQTT topic.
    pub(crate) topic: String,
    /// The payload as JSON text: stored and published as it is.
    pub(crate) payload: String,
}

impl NewAlert {
    /// An alert event from a payload built as a value (the rare events of the overdue
    /// check; the station path serialises its payloads straight to text).
    pub(crate) fn of_value(event_id: Uuid, topic: String, payload: &Value) -> NewAlert {
        NewAlert {
            event_id,
            incident_id: incident_of(payload),
            topic,
            payload: payload.to_string(),
        }
    }
}

/// Queues alert events in the outbox in one statement, in order. The payloads go as text
/// and are stored as they are (`json`: the server checks them, it does not re-encode them).
///
/// `fanned_out_at` is given, not left to its default: the default function
/// (`outbox_fanned_out_default()`, schema 20: now() when no live subscription exists, else
/// NULL) is `STABLE`, so one evaluation per statement gives every row the value the default
/// would, where the default runs the function, and its look-up of `subscriptions`, once per
/// row. Measured on the 80,492 alert events of a peer-bench drain inserted in one statement
/// (`deploy/bench/outbox-payload.sh`, three rounds, as `jsonb`): 0.97–1.29 s with the
/// default, 0.81–0.99 s with one evaluation; as `json` with one evaluation, 0.37–0.41 s.
pub(crate) async fn insert_alerts(
    tx: &Transaction<'_>,
    events: &[NewAlert],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let incidents: Vec<Option<Uuid>> = events.iter().map(|e| e.incident_id).collect();
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (event_id, kind, topic, payload, incident_id, fanned_out_at)
             SELECT e, 'alert', t, p::json, i, (SELECT outbox_fanned_out_default())
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[])
                  WITH ORDINALITY AS u(e, t, p, i, n)
             ORDER BY n",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &topics, &payloads, &incidents])
        .await?;
    Ok(())
}

/// One unpublished outbox row.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    /// Outbox row id (publication order).
    pub(crate) id: i64,
    /// MQTT topic.
    pub(crate) topic: String,
    /// The payload as stored: the JSON text to publish.
    pub(crate) payload: String,
    /// `alert` or `reject`.
    pub(crate) kind: String,
}

/// A publishing round's start: takes the outbox lock for the rest of `tx` if no other
/// transaction holds it, and reads the oldest unpublished rows, at most `limit`, in id order.
/// `None` when another instance holds the lock (its round is on; this one skips).
///
/// The lock, [`QUEUE_BY_INDEX`] and the read go to the server together, one round trip
/// instead of two: both statements are prepared first and the requests are polled in order
/// (`join!` in `biased` mode), so they leave in this order and the server runs the read after
/// the lock. An instance that did not get the lock
/// drops what it read. Measured in the bench's alert-latency phase (five interleaved pairs,
/// `deploy/bench/latency-split-ab.sh`), a round's start (a pooled connection, BEGIN, then
/// these) took 1.71 ms at the median with the lock and the read sent one after the other,
/// 1.48 ms sent together; its p99 stayed at about 7 ms (docs/performance.md, 2026-12-07,
/// tenth session).
///
/// The queue is read through its primary key, whatever the planner thinks of the table
/// ([`QUEUE_BY_INDEX`]). `outbox_pending` is tiny but churns: every row is inserted and soon
/// deleted, so between autovacuum passes its heap is mostly dead rows, and its statistics
/// (taken when it was nearly empty) make a sequential scan and a sort look cheapest. That scan
/// visits every dead row of every round (0.4-1.0 ms, growing until the next vacuum), where
/// the index scan steps over entries the previous round already marked dead (0.05-0.09 ms).
/// With no sequential scan to choose, the one plan left is also a safe generic plan, so the
/// statement is no longer planned afresh each round (0.7-2.5 ms of planning a round, which is
/// a round per alert or two at 2,000 messages/s). Both measured live during the bench's
/// alert-latency phase (docs/performance.md, 2026-12-07). Earlier, a cached generic plan made
/// while the outbox was nearly empty hash-joined the whole outbox every round (17.7 ms); that
/// needs a sequential scan of `outbox` too, which this rules out as well.
pub(crate) async fn lead_and_read(
    db: &Transaction<'_>,
    limit: usize,
) -> Result<Option<Vec<Pending>>, StoreError> {
    let lock = db
        .prepare_cached("SELECT pg_try_advisory_xact_lock($1)")
        .await?;
    let read = db
        .prepare_cached(
            "SELECT o.id, o.topic, o.payload::text, o.kind
             FROM (SELECT id FROM outbox_pending ORDER BY id LIMIT $1) q
             CROSS JOIN LATERAL (SELECT * FROM outbox WHERE outbox.id = q.id) o
             ORDER BY q.id",
        )
        .await?;
    let limit = limit as i64;
    let key: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&OUTBOX_LOCK];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&limit];
    let (locked, by_index, rows) = tokio::join!(
        biased;
        db.query_one(&lock, &key),
        db.batch_execute(QUEUE_BY_INDEX),
        db.query(&read, &params)
    );
    if !locked?.get::<_, bool>(0) {
        return Ok(None);
    }
    by_index?;
    let rows = rows?;
    Ok(Some(
        rows.iter()
            .map(|r| Pending {
                id: r.get(0),
                topic: r.get(1),
                payload: r.get(2),
                kind: r.get(3),
            })
            .collect(),
    ))
}

/// Marks rows published (after the broker acknowledged them), in the round's transaction:
/// their ids leave the queue.
///
/// The round's COMMIT does not wait for the WAL flush (`synchronous_commit = off` for this
/// transaction only): a mark lost in a crash puts its rows back in the queue, and they are
/// published again, which at-least-once delivery allows (subscribers deduplicate by
/// `event_id`). The batch writer's commits, which the acks depend on, stay synchronous.
pub(crate) async fn mark_published(db: &Transaction<'_>, ids: &[i64]) -> Result<(), StoreError> {
    let stmt = db
        .prepare_cached("DELETE FROM outbox_pending WHERE id = ANY($1)")
        .await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let (relaxed, deleted) = tokio::join!(
        db.batch_execute("SET LOCAL synchronous_commit = off"),
        db.execute(&stmt, &params)
    );
    relaxed?;
    deleted?;
    Ok(())
}

/// How many rows are not yet published (the `soilmon_outbox_pending` gauge).
pub(crate) async fn pending_count(db: &Client) -> Result<i64, StoreError> {
    let row = db
        .query_one("SELECT count(*) FROM outbox_pending", &[])
        .await?;
    Ok(row.get(0))
}
