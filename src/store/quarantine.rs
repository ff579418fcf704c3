//! The quarantine browser and replay: refused station messages listed by reason, station
//! and time, one shown whole with its replays, and a replay of one through the batch writer
//! (the same stage → copy → finish path the collector uses), recorded in
//! `quarantine_replays` in the replay's own transaction.
//!
//! A replay is idempotent: the message's idempotency key (station, `msg_id`) stores it once
//! however often it is replayed. A message still bad stays quarantined: when its reason is
//! the one recorded, the writer adds nothing; when the reason changed (say `unknown_point`
//! became `future_timestamp`), the writer quarantines it under the new reason and tells the
//! station, as for any refusal. Either way the replay row holds the current reason.

use chrono::{DateTime, Utc};
use deadpool_postgres::Client;
use serde::Serialize;

use super::writer::{self, Received};
use super::{Context, StoreError};

/// Which entries [`list`] returns (every field optional; newest first).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The reason the message was quarantined with.
    pub reason: Option<String>,
    /// The station of its topic.
    pub station: Option<String>,
    /// Received at or after.
    pub since: Option<DateTime<Utc>>,
    /// Received before.
    pub until: Option<DateTime<Utc>>,
    /// Only entries still quarantined (`Some(true)`) or only resolved ones (`Some(false)`).
    pub open: Option<bool>,
    /// At most this many.
    pub limit: i64,
}

/// One quarantined message, without its payload.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Quarantine id (the `quarantine_id` of the reject reply).
    pub id: i64,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// Topic it came on.
    pub topic: String,
    /// Station of the topic (absent for `bad_topic`).
    pub station_id: Option<String>,
    /// Its `msg_id`, as parsed or as the lenient scan recovered it.
    pub msg_id: Option<String>,
    /// Reason code it was quarantined with.
    pub reason: String,
    /// What was wrong.
    pub detail: String,
    /// Payload size in bytes.
    pub size: i32,
    /// SHA-256 of the payload (the reply's `payload_sha256`).
    pub payload_sha256: String,
    /// `quarantined` (never replayed, or the last replay refused it) or `resolved` (a replay
    /// stored it, or found it stored).
    pub status: String,
    /// The reason as of the last replay that refused it (else `reason`).
    pub current_reason: String,
    /// How many times it was replayed.
    pub replays: i64,
}

/// One replay of an entry.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    /// When.
    pub replayed_at: DateTime<Utc>,
    /// Who (token or operator name).
    pub replayed_by: String,
    /// `stored`, `already_stored` or `refused`.
    pub outcome: String,
    /// The reason, when refused.
    pub reason: Option<String>,
    /// The detail, when refused.
    pub detail: Option<String>,
}

/// An entry with its payload and its replays, oldest first.
#[derive(Debug, Clone)]
pub struct Shown {
    /// The entry.
    pub entry: Entry,
    /// The payload bytes exactly as received.
    pub raw: Vec<u8>,
    /// Its replays.
    pub replays: Vec<Replay>,
}

/// How one replay came out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `stored`, `already_stored` or `refused`.
    pub outcome: &'static str,
    /// The current reason, when refused.
    pub reason: Option<&'static str>,
    /// Its detail, when refused.
    pub detail: Option<String>,
}

/// The columns of an [`Entry`]: `q` is the quarantine row, `r` its last replay, `n` the
/// replay count, `d` whether any replay resolved it.
const ENTRY_COLUMNS: &str = "q.id, q.received_at, q.topic, q.station_id, q.msg_id, q.reason,
    q.detail, length(q.raw), q.raw_sha256,
    CASE WHEN d.resolved THEN 'resolved' ELSE 'quarantined' END,
    CASE WHEN d.resolved THEN q.reason ELSE coalesce(r.reason, q.reason) END,
    coalesce(n.replays, 0)";

/// The joins [`ENTRY_COLUMNS`] reads.
const ENTRY_JOINS: &str = "FROM quarantine q
    LEFT JOIN LATERAL (SELECT reason FROM quarantine_replays
                       WHERE quarantine_id = q.id ORDER BY id DESC LIMIT 1) r ON true
    LEFT JOIN LATERAL (SELECT count(*) AS replays FROM quarantine_replays
                       WHERE quarantine_id = q.id) n ON true
    LEFT JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM quarantine_replays
                       WHERE quarantine_id = q.id AND outcome <> 'refused') AS resolved) d ON true";

fn entry(row: &tokio_postgres::Row) -> Entry {
    Entry {
        id: row.get(0),
        received_at: row.get(1),
        topic: row.get(2),
        station_id: row.get(3),
        msg_id: row.get(4),
        reason: row.get(5),
        detail: row.get(6),
        size: row.get(7),
        payload_sha256: row.get(8),
        status: row.get(9),
        current_reason: row.get(10),
        replays: row.get(11),
    }
}

/// Entries matching `f`, newest first.
pub async fn list(client: &Client, f: &Filter) -> Result<Vec<Entry>, StoreError> {
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} {ENTRY_JOINS}
         WHERE ($1::text IS NULL OR q.reason = $1)
           AND ($2::text IS NULL OR q.station_id = $2)
           AND ($3::timestamptz IS NULL OR q.received_at >= $3)
           AND ($4::timestamptz IS NULL OR q.received_at < $4)
           AND ($5::boolean IS NULL OR d.resolved <> $5)
         ORDER BY q.id DESC LIMIT $6"
    );
    let rows = client
        .query(
            &sql,
            &[&f.reason, &f.station, &f.since, &f.until, &f.open, &f.limit],
        )
        .await?;
    Ok(rows.iter().map(entry).collect())
}

/// One entry with its payload and replays, or `None`.
pub async fn get(client: &Client, id: i64) -> Result<Option<Shown>, StoreError> {
    let sql = format!("SELECT {ENTRY_COLUMNS}, q.raw {ENTRY_JOINS} WHERE q.id = $1");
    let Some(row) = client.query_opt(&sql, &[&id]).await? else {
        return Ok(None);
    };
    let replays = client
        .query(
            "SELECT replayed_at, replayed_by, outcome, reason, detail FROM quarantine_replays
             WHERE quarantine_id = $1 ORDER BY id",
            &[&id],
        )
        .await?
        .iter()
        .map(|r| Replay {
            replayed_at: r.get(0),
            replayed_by: r.get(1),
            outcome: r.get(2),
            reason: r.get(3),
            detail: r.get(4),
        })
        .collect();
    Ok(Some(Shown {
        entry: entry(&row),
        raw: row.get(12),
        replays,
    }))
}

/// Replays entry `id`, its message parsed anew as `msg`, through the batch writer, and
/// records who replayed it and how it came out, all in one transaction.
pub async fn replay(
    client: &mut Client,
    ctx: &Context<'_>,
    id: i64,
    msg: &Received,
    by: &str,
) -> Result<Outcome, StoreError> {
    let batch = std::slice::from_ref(msg);
    let staged = writer::stage(client, ctx, batch).await?;
    let outcome = match staged.refusals().next() {
        Some((code, detail)) => Outcome {
            outcome: "refused",
            reason: Some(code.as_str()),
            detail: Some(detail.to_string()),
        },
        None if staged.report().stored == 1 => Outcome {
            outcome: "stored",
            reason: None,
            detail: None,
        },
        None => Outcome {
            outcome: "already_stored",
            reason: None,
            detail: None,
        },
    };
    writer::copy_readings(&staged).await?;
    staged
        .transaction()
        .execute(
            "INSERT INTO quarantine_replays (quarantine_id, replayed_at, replayed_by, outcome,
                                             reason, detail)
             VALUES ($1, now(), $2, $3, $4, $5)",
            &[&id, &by, &outcome.outcome, &outcome.reason, &outcome.detail],
        )
        .await?;
    writer::finish(staged, ctx).await?;
    Ok(outcome)
}
