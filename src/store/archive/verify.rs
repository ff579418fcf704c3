//! `soilmon verify`: walks the archive chain in `seq` order (streamed through a portal, in
//! one read-only repeatable-read transaction, so it sees one consistent snapshot), recomputes
//! every hash and the readings digest of every entry from the `readings` table, and reports
//! the first broken link.
//!
//! What is detected: an archive entry edited (raw bytes, any hashed field), deleted
//! (a gap in `seq`, a `prev_hash` that no longer matches, or a head that points past the
//! end), or reordered; a reading edited or deleted without a recorded correction; a reading
//! inserted without an archive entry (when verifying from the start).
//!
//! What is not: a superuser who rewrites the whole chain consistently from some point on.
//! Record the head hash printed by `verify` somewhere the database administrator cannot
//! write (a signed log, a ticket, a printed report) and compare later.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, IsolationLevel};

use super::{
    entry_hash, readings_digest, sha256_hex, undo_corrections, Correction, CorrectionIndex,
    DigestRow, EntryFields, Kind, DIGEST_COLUMNS, GENESIS,
};
use crate::store::StoreError;

/// The first broken link found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Sequence number of the entry where the chain breaks.
    pub seq: i64,
    /// Kind of that entry (empty when the entry is missing).
    pub kind: String,
    /// Its reference (`station/msg_id`, batch id, …).
    pub reference: String,
    /// What differs.
    pub detail: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "archive entry seq {} ({} {}): {}",
            self.seq,
            if self.kind.is_empty() {
                "?"
            } else {
                &self.kind
            },
            self.reference,
            self.detail
        )
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: u64,
    /// Readings checked against their entries.
    pub readings: u64,
    /// Sequence number of the last entry checked.
    pub last_seq: i64,
    /// Hash of the last entry checked (record it elsewhere to anchor the chain).
    pub last_hash: String,
    /// The first broken link, if any.
    pub broken: Option<Broken>,
}

/// Rows fetched from the portal per round trip.
const CHUNK: i32 = 500;

/// Verifies the chain from the start, or from the first entry created at or after `from`
/// (then that entry's `prev_hash` is taken on trust and readings not covered by any entry are
/// not looked for).
pub async fn verify(
    client: &mut Client,
    from: Option<DateTime<Utc>>,
) -> Result<VerifyReport, StoreError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    let mut report = VerifyReport::default();

    // Corrections first: verifying an original entry undoes the corrections made since.
    let mut corrections = CorrectionIndex::new();
    for r in tx
        .query(
            "SELECT seq, ref, raw FROM archive WHERE kind = 'correction' ORDER BY seq",
            &[],
        )
        .await?
    {
        let seq: i64 = r.get(0);
        let raw: Vec<u8> = r.get(2);
        match serde_json::from_slice::<Correction>(&raw) {
            Ok(c) => corrections
                .entry((c.source.clone(), c.source_id.clone()))
                .or_default()
                .push((seq, c)),
            Err(e) => {
                report.broken = Some(Broken {
                    seq,
                    kind: "correction".into(),
                    reference: r.get(1),
                    detail: format!("correction record is not readable: {e}"),
                });
                return Ok(report);
            }
        }
    }

    let (mut expected, mut prev) = match from {
        None => (1i64, GENESIS.to_string()),
        Some(at) => match tx
            .query_opt(
                "SELECT seq, prev_hash FROM archive WHERE created_at >= $1 ORDER BY seq LIMIT 1",
                &[&at],
            )
            .await?
        {
            Some(r) => (r.get(0), r.get(1)),
            None => {
                tx.commit().await?;
                return Ok(report);
            }
        },
    };
    let start = expected;

    let station_rows = tx
        .prepare(&format!(
            "SELECT {DIGEST_COLUMNS} FROM readings
             WHERE source = 'station' AND source_id = $1 AND msg_id = $2"
        ))
        .await?;
    let lab_rows = tx
        .prepare(&format!(
            "SELECT {DIGEST_COLUMNS} FROM readings WHERE source = 'lab' AND source_id = $1"
        ))
        .await?;
    let walk = tx
        .prepare(
            "SELECT seq, kind, ref, raw, raw_sha256, readings_digest, prev_hash, entry_hash,
                    created_at
             FROM archive WHERE seq >= $1 ORDER BY seq",
        )
        .await?;
    let portal = tx.bind(&walk, &[&start]).await?;
    'walk: loop {
        let rows = tx.query_portal(&portal, CHUNK).await?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let seq: i64 = r.get(0);
            let kind: String = r.get(1);
            let reference: String = r.get(2);
            let raw: Vec<u8> = r.get(3);
            let raw_sha256: String = r.get(4);
            let digest: String = r.get(5);
            let prev_hash: String = r.get(6);
            let hash: String = r.get(7);
            let created_at: DateTime<Utc> = r.get(8);
            let broken = |detail: String| Broken {
                seq,
                kind: kind.clone(),
                reference: reference.clone(),
                detail,
            };
            if seq != expected {
                report.broken = Some(Broken {
                    seq: expected,
                    kind: String::new(),
                    reference: String::new(),
                    detail: format!(
                        "entry {expected} is missing: the chain jumps from {} to {seq} ({kind} {reference})",
                        expected - 1
                    ),
                });
                break 'walk;
            }
            if prev_hash != prev {
                report.broken = Some(broken(format!(
                    "prev_hash {prev_hash} does not match the previous entry's hash {prev} \
                     (an entry was deleted, inserted or reordered)"
                )));
                break 'walk;
            }
            let actual_sha = sha256_hex(&raw);
            if actual_sha != raw_sha256 {
                report.broken = Some(broken(format!(
                    "raw bytes changed: SHA-256 is {actual_sha}, recorded {raw_sha256}"
                )));
                break 'walk;
            }
            let recomputed = entry_hash(&EntryFields {
                seq,
                prev_hash: &prev_hash,
                kind: &kind,
                reference: &reference,
                raw_sha256: &raw_sha256,
                readings_digest: &digest,
                created_at_us: created_at.timestamp_micros(),
            });
            if recomputed != hash {
                report.broken = Some(broken(format!(
                    "entry fields changed: hash recomputes to {recomputed}, recorded {hash}"
                )));
                break 'walk;
            }
            // The readings derived from the entry.
            let (source, source_id, msg_filter, rows) = match Kind::parse(&kind) {
                Some(Kind::StationMessage) => {
                    let Some((station, msg_id)) = reference.split_once('/') else {
                        report.broken = Some(broken("reference is not station/msg_id".into()));
                        break 'walk;
                    };
                    let rows = tx.query(&station_rows, &[&station, &msg_id]).await?;
                    (
                        "station",
                        station.to_string(),
                        Some(msg_id.to_string()),
                        rows,
                    )
                }
                Some(Kind::LabBatch) => {
                    let rows = tx.query(&lab_rows, &[&reference]).await?;
                    ("lab", reference.clone(), None, rows)
                }
                Some(Kind::Correction) => {
                    let ok = serde_json::from_slice::<Correction>(&raw)
                        .map(|c| readings_digest(&[c.new]) == digest)
                        .unwrap_or(false);
                    if !ok {
                        report.broken = Some(broken(
                            "correction record does not match its readings digest".into(),
                        ));
                        break 'walk;
                    }
                    report.entries += 1;
                    prev = hash;
                    expected += 1;
                    continue;
                }
                None => {
                    report.broken = Some(broken(format!("unknown kind {kind:?}")));
                    break 'walk;
                }
            };
            let current: Vec<DigestRow> = rows.iter().map(DigestRow::from_row).collect();
            let n = current.len() as u64;
            let key = (source.to_string(), source_id);
            let relevant: Vec<&(i64, Correction)> = corrections
                .get(&key)
                .map(|list| {
                    list.iter()
                        .filter(|(_, c)| msg_filter.as_deref().map_or(true, |m| m == c.new.msg_id))
                        .collect()
                })
                .unwrap_or_default();
            let original = match undo_corrections(current, &relevant) {
                Ok(rows) => rows,
                Err(detail) => {
                    report.broken = Some(broken(detail));
                    break 'walk;
                }
            };
            let recomputed = readings_digest(&original);
            if recomputed != digest {
                report.broken = Some(broken(format!(
                    "its readings were changed or deleted without a recorded correction \
                     ({n} reading(s) stored now; digest {recomputed}, recorded {digest})"
                )));
                break 'walk;
            }
            report.entries += 1;
            report.readings += n;
            prev = hash;
            expected += 1;
        }
    }
    report.last_seq = expected - 1;
    report.last_hash = prev.clone();
    if report.broken.is_some() {
        tx.commit().await?;
        return Ok(report);
    }

    let head = tx
        .query_one("SELECT seq, hash FROM archive_head WHERE id", &[])
        .await?;
    let (head_seq, head_hash): (i64, String) = (head.get(0), head.get(1));
    if head_seq != report.last_seq || head_hash != prev {
        report.broken = Some(Broken {
            seq: head_seq,
            kind: String::new(),
            reference: String::new(),
            detail: format!(
                "the chain head records entry {head_seq} ({head_hash}) but the chain ends at \
                 entry {} ({prev}): entries at the end were deleted",
                report.last_seq
            ),
        });
    } else if from.is_none() {
        let total: i64 = tx
            .query_one("SELECT count(*) FROM readings", &[])
            .await?
            .get(0);
        if total as u64 != report.readings {
            let example = tx
                .query_opt(
                    "SELECT r.source, r.source_id, r.msg_id, r.metal, r.point_id
                     FROM readings r
                     WHERE NOT EXISTS (SELECT 1 FROM archive a
                                       WHERE (r.source = 'station' AND a.kind = 'station_message'
                                              AND a.ref = r.source_id || '/' || r.msg_id)
                                          OR (r.source = 'lab' AND a.kind = 'lab_batch'
                                              AND a.ref = r.source_id))
                     LIMIT 1",
                    &[],
                )
                .await?;
            let what = example.map_or(String::new(), |r| {
                format!(
                    ", e.g. {} {}/{} {} at point {}",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4)
                )
            });
            report.broken = Some(Broken {
                seq: report.last_seq,
                kind: String::new(),
                reference: String::new(),
                detail: format!(
                    "{} reading(s) stored but {} covered by archive entries{what}",
                    total, report.readings
                ),
            });
        }
    }
    tx.commit().await?;
    Ok(report)
}
