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
use tokio_postgres::{Client, IsolationLevel, Row, Statement, Transaction};

use super::{
    entry_hash, readings_digest, sha256_hex, undo_corrections, Correction, CorrectionIndex,
    DigestRow, EntryFields, Kind, DIGEST_SELECT, GENESIS,
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
    /// What differs (boxed: the chain's checks return it as their error, and it is large).
    pub what: Box<Break>,
}

/// What is wrong at a broken link (its `Display` is the detail `soilmon verify` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// A correction record's raw JSON cannot be read.
    UnreadableCorrection {
        /// The decoding error.
        error: String,
    },
    /// Entry `expected` is missing: the next one in the table is `found`.
    Missing {
        /// The sequence number looked for.
        expected: i64,
        /// The sequence number found instead.
        found: i64,
        /// Kind of the entry found.
        kind: String,
        /// Reference of the entry found.
        reference: String,
    },
    /// `prev_hash` is not the previous entry's hash.
    PrevHash {
        /// As recorded in the entry.
        recorded: String,
        /// The previous entry's hash.
        previous: String,
    },
    /// The raw bytes do not hash to the recorded SHA-256.
    RawBytes {
        /// SHA-256 of the raw bytes now.
        actual: String,
        /// As recorded.
        recorded: String,
    },
    /// The hashed fields do not hash to the recorded entry hash.
    EntryHash {
        /// The entry hash recomputed.
        recomputed: String,
        /// As recorded.
        recorded: String,
    },
    /// A station message entry whose reference is not `station/msg_id`.
    BadReference,
    /// A correction record whose `new` reading does not match the entry's digest.
    CorrectionDigest,
    /// An incident action entry whose raw bytes are not an action record, or which claims
    /// readings.
    ActionRecord,
    /// A kind this version does not know.
    UnknownKind {
        /// The kind as stored.
        kind: String,
    },
    /// A recorded correction cannot be undone (the reading is missing or changed since).
    Correction {
        /// What is inconsistent.
        detail: String,
    },
    /// The stored readings do not match the entry's digest.
    Readings {
        /// Number of readings stored now.
        stored: u64,
        /// Their digest.
        recomputed: String,
        /// As recorded.
        recorded: String,
    },
    /// The chain head points past the last entry.
    HeadPastEnd {
        /// Head sequence number.
        head_seq: i64,
        /// Head hash.
        head_hash: String,
        /// Sequence number of the last entry.
        last_seq: i64,
        /// Hash of the last entry.
        last_hash: String,
    },
    /// Readings stored that no archive entry covers.
    Uncovered {
        /// Readings stored.
        total: i64,
        /// Readings covered by entries.
        covered: u64,
        /// `, e.g. …` naming one of them, or empty.
        example: String,
    },
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::UnreadableCorrection { error } => {
                write!(f, "correction record is not readable: {error}")
            }
            Break::Missing {
                expected,
                found,
                kind,
                reference,
            } => write!(
                f,
                "entry {expected} is missing: the chain jumps from {} to {found} ({kind} {reference})",
                expected - 1
            ),
            Break::PrevHash { recorded, previous } => write!(
                f,
                "prev_hash {recorded} does not match the previous entry's hash {previous} \
                 (an entry was deleted, inserted or reordered)"
            ),
            Break::RawBytes { actual, recorded } => write!(
                f,
                "raw bytes changed: SHA-256 is {actual}, recorded {recorded}"
            ),
            Break::EntryHash {
                recomputed,
                recorded,
            } => write!(
                f,
                "entry fields changed: hash recomputes to {recomputed}, recorded {recorded}"
            ),
            Break::BadReference => write!(f, "reference is not station/msg_id"),
            Break::CorrectionDigest => {
                write!(f, "correction record does not match its readings digest")
            }
            Break::ActionRecord => write!(f, "incident action entry is not an action record"),
            Break::UnknownKind { kind } => write!(f, "unknown kind {kind:?}"),
            Break::Correction { detail } => write!(f, "{detail}"),
            Break::Readings {
                stored,
                recomputed,
                recorded,
            } => write!(
                f,
                "its readings were changed or deleted without a recorded correction \
                 ({stored} reading(s) stored now; digest {recomputed}, recorded {recorded})"
            ),
            Break::HeadPastEnd {
                head_seq,
                head_hash,
                last_seq,
                last_hash,
            } => write!(
                f,
                "the chain head records entry {head_seq} ({head_hash}) but the chain ends at \
                 entry {last_seq} ({last_hash}): entries at the end were deleted"
            ),
            Break::Uncovered {
                total,
                covered,
                example,
            } => write!(
                f,
                "{total} reading(s) stored but {covered} covered by archive entries{example}"
            ),
        }
    }
}

impl Broken {
    /// A break not tied to one entry's kind and reference (a missing entry, the head, the
    /// readings table).
    fn at(seq: i64, what: Break) -> Broken {
        Broken {
            seq,
            kind: String::new(),
            reference: String::new(),
            what: Box::new(what),
        }
    }
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
            self.what
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
    let corrections = match load_corrections(&tx).await? {
        Ok(index) => index,
        Err(broken) => {
            report.broken = Some(broken);
            return Ok(report);
        }
    };
    let start = match from {
        None => (1, GENESIS.to_string()),
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
    walk(&tx, start, &corrections, &mut report).await?;
    if report.broken.is_none() {
        report.broken = check_end(&tx, &report, from.is_none()).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The correction records, by (source, source id), or the first unreadable one.
async fn load_corrections(
    tx: &Transaction<'_>,
) -> Result<Result<CorrectionIndex, Broken>, StoreError> {
    let mut index = CorrectionIndex::new();
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
            Ok(c) => index
                .entry((c.source.clone(), c.source_id.clone()))
                .or_default()
                .push((seq, c)),
            Err(e) => {
                return Ok(Err(Broken {
                    seq,
                    kind: Kind::Correction.as_str().into(),
                    reference: r.get(1),
                    what: Box::new(Break::UnreadableCorrection {
                        error: e.to_string(),
                    }),
                }))
            }
        }
    }
    Ok(Ok(index))
}

/// One archive row, as stored.
#[derive(Debug, Clone)]
struct Entry {
    seq: i64,
    kind: String,
    reference: String,
    raw: Vec<u8>,
    raw_sha256: String,
    digest: String,
    prev_hash: String,
    hash: String,
    created_at: DateTime<Utc>,
}

/// The SELECT list [`Entry::from_row`] reads.
const ENTRY_COLUMNS: &str =
    "seq, kind, ref, raw, raw_sha256, readings_digest, prev_hash, entry_hash, created_at";

impl Entry {
    /// Reads a row selected with [`ENTRY_COLUMNS`].
    fn from_row(r: &Row) -> Entry {
        Entry {
            seq: r.get(0),
            kind: r.get(1),
            reference: r.get(2),
            raw: r.get(3),
            raw_sha256: r.get(4),
            digest: r.get(5),
            prev_hash: r.get(6),
            hash: r.get(7),
            created_at: r.get(8),
        }
    }

    /// The entry hash of the fields as stored now.
    fn recomputed_hash(&self) -> String {
        entry_hash(&EntryFields {
            seq: self.seq,
            prev_hash: &self.prev_hash,
            kind: &self.kind,
            reference: &self.reference,
            raw_sha256: &self.raw_sha256,
            readings_digest: &self.digest,
            created_at_us: self.created_at.timestamp_micros(),
        })
    }

    /// This entry, broken by `what`.
    fn broken(&self, what: Break) -> Broken {
        Broken {
            seq: self.seq,
            kind: self.kind.clone(),
            reference: self.reference.clone(),
            what: Box::new(what),
        }
    }
}

/// The readings an entry covers, to be read back and digested.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Covers {
    /// None: a correction record, checked in full by [`check_entry`].
    Nothing,
    /// The readings of one station message.
    Station {
        /// Station id.
        station: String,
        /// Message id.
        msg_id: String,
    },
    /// The readings of one lab batch.
    Lab {
        /// Batch id.
        batch_id: String,
    },
}

impl Covers {
    /// The recorded corrections of these readings, in seq order.
    fn corrections<'a>(&self, index: &'a CorrectionIndex) -> Vec<&'a (i64, Correction)> {
        let (key, msg_id) = match self {
            Covers::Nothing => return Vec::new(),
            Covers::Station { station, msg_id } => {
                (("station".to_string(), station.clone()), Some(msg_id))
            }
            Covers::Lab { batch_id } => (("lab".to_string(), batch_id.clone()), None),
        };
        index
            .get(&key)
            .map(|list| {
                list.iter()
                    .filter(|(_, c)| msg_id.map_or(true, |m| *m == c.new.msg_id))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Checks one entry against the one before it (`expected`: its sequence number, `prev`: its
/// hash): sequence, link, raw bytes, entry hash, and for a correction its digest. Pure.
/// Returns which readings the entry covers, or the broken link.
fn check_entry(expected: i64, prev: &str, e: &Entry) -> Result<Covers, Broken> {
    if e.seq != expected {
        return Err(Broken::at(
            expected,
            Break::Missing {
                expected,
                found: e.seq,
                kind: e.kind.clone(),
                reference: e.reference.clone(),
            },
        ));
    }
    if e.prev_hash != prev {
        return Err(e.broken(Break::PrevHash {
            recorded: e.prev_hash.clone(),
            previous: prev.to_string(),
        }));
    }
    let actual = sha256_hex(&e.raw);
    if actual != e.raw_sha256 {
        return Err(e.broken(Break::RawBytes {
            actual,
            recorded: e.raw_sha256.clone(),
        }));
    }
    let recomputed = e.recomputed_hash();
    if recomputed != e.hash {
        return Err(e.broken(Break::EntryHash {
            recomputed,
            recorded: e.hash.clone(),
        }));
    }
    match Kind::parse(&e.kind) {
        Some(Kind::StationMessage) => match e.reference.split_once('/') {
            Some((station, msg_id)) => Ok(Covers::Station {
                station: station.to_string(),
                msg_id: msg_id.to_string(),
            }),
            None => Err(e.broken(Break::BadReference)),
        },
        Some(Kind::LabBatch) => Ok(Covers::Lab {
            batch_id: e.reference.clone(),
        }),
        Some(Kind::Correction) => {
            let matches = serde_json::from_slice::<Correction>(&e.raw)
                .is_ok_and(|c| readings_digest(&[c.new]) == e.digest);
            if matches {
                Ok(Covers::Nothing)
            } else {
                Err(e.broken(Break::CorrectionDigest))
            }
        }
        Some(Kind::IncidentAction) => {
            let is_action = serde_json::from_slice::<serde_json::Value>(&e.raw)
                .is_ok_and(|v| v.get("incident_id").is_some() && v.get("action").is_some());
            if is_action && readings_digest(&[]) == e.digest {
                Ok(Covers::Nothing)
            } else {
                Err(e.broken(Break::ActionRecord))
            }
        }
        None => Err(e.broken(Break::UnknownKind {
            kind: e.kind.clone(),
        })),
    }
}

/// Checks the readings stored now for an entry (`current`, what it `covers`) against its
/// digest, once the recorded corrections of them are undone. Pure. Returns the number of
/// readings stored, or the broken link. An entry that covers [`Covers::Nothing`] has none.
fn check_readings(
    e: &Entry,
    covers: &Covers,
    current: Vec<DigestRow>,
    corrections: &CorrectionIndex,
) -> Result<u64, Broken> {
    if *covers == Covers::Nothing {
        return Ok(0);
    }
    let stored = current.len() as u64;
    let original = undo_corrections(current, &covers.corrections(corrections))
        .map_err(|detail| e.broken(Break::Correction { detail }))?;
    let recomputed = readings_digest(&original);
    if recomputed != e.digest {
        return Err(e.broken(Break::Readings {
            stored,
            recomputed,
            recorded: e.digest.clone(),
        }));
    }
    Ok(stored)
}

/// The statements that read back the readings an entry covers.
struct CoveredReadings {
    station: Statement,
    lab: Statement,
}

impl CoveredReadings {
    /// Prepares both statements in `tx`.
    async fn prepare(tx: &Transaction<'_>) -> Result<CoveredReadings, StoreError> {
        let station = tx
            .prepare(&format!(
                "{DIGEST_SELECT}
                 WHERE so.source = 'station' AND so.source_id = $1 AND s.msg_id = $2"
            ))
            .await?;
        let lab = tx
            .prepare(&format!(
                "{DIGEST_SELECT} WHERE so.source = 'lab' AND so.source_id = $1"
            ))
            .await?;
        Ok(CoveredReadings { station, lab })
    }

    /// The readings stored now that `covers` names.
    async fn read(
        &self,
        tx: &Transaction<'_>,
        covers: &Covers,
    ) -> Result<Vec<DigestRow>, StoreError> {
        let rows = match covers {
            Covers::Nothing => return Ok(Vec::new()),
            Covers::Station { station, msg_id } => {
                tx.query(&self.station, &[station, msg_id]).await?
            }
            Covers::Lab { batch_id } => tx.query(&self.lab, &[batch_id]).await?,
        };
        Ok(rows.iter().map(DigestRow::from_row).collect())
    }
}

/// Walks the chain from entry `first` (`prev`: the hash before it), counting into `report`
/// (entries, readings, last entry) and stopping at the first broken link.
async fn walk(
    tx: &Transaction<'_>,
    (first, prev): (i64, String),
    corrections: &CorrectionIndex,
    report: &mut VerifyReport,
) -> Result<(), StoreError> {
    report.last_seq = first - 1;
    report.last_hash = prev;
    let covered = CoveredReadings::prepare(tx).await?;
    let entries = tx
        .prepare(&format!(
            "SELECT {ENTRY_COLUMNS} FROM archive WHERE seq >= $1 ORDER BY seq"
        ))
        .await?;
    let portal = tx.bind(&entries, &[&first]).await?;
    loop {
        let rows = tx.query_portal(&portal, CHUNK).await?;
        if rows.is_empty() {
            return Ok(());
        }
        for e in rows.iter().map(Entry::from_row) {
            let checked = match check_entry(report.last_seq + 1, &report.last_hash, &e) {
                Ok(covers) => {
                    let current = covered.read(tx, &covers).await?;
                    check_readings(&e, &covers, current, corrections)
                }
                Err(broken) => Err(broken),
            };
            match checked {
                Ok(readings) => {
                    report.entries += 1;
                    report.readings += readings;
                    report.last_seq = e.seq;
                    report.last_hash = e.hash;
                }
                Err(broken) => {
                    report.broken = Some(broken);
                    return Ok(());
                }
            }
        }
    }
}

/// After an unbroken walk: the chain head must point at the last entry, and (verifying from
/// the start) every stored reading must be covered by an entry.
async fn check_end(
    tx: &Transaction<'_>,
    report: &VerifyReport,
    from_start: bool,
) -> Result<Option<Broken>, StoreError> {
    let head = tx
        .query_one("SELECT seq, hash FROM archive_head WHERE id", &[])
        .await?;
    if let Err(broken) = check_head(report, head.get(0), head.get(1)) {
        return Ok(Some(broken));
    }
    if !from_start {
        return Ok(None);
    }
    let total: i64 = tx
        .query_one("SELECT count(*) FROM readings", &[])
        .await?
        .get(0);
    if total as u64 == report.readings {
        return Ok(None);
    }
    Ok(Some(Broken::at(
        report.last_seq,
        Break::Uncovered {
            total,
            covered: report.readings,
            example: uncovered_example(tx).await?,
        },
    )))
}

/// The chain head (`head_seq`, `head_hash`) against the last entry walked. Pure.
fn check_head(report: &VerifyReport, head_seq: i64, head_hash: String) -> Result<(), Broken> {
    if head_seq == report.last_seq && head_hash == report.last_hash {
        return Ok(());
    }
    Err(Broken::at(
        head_seq,
        Break::HeadPastEnd {
            head_seq,
            head_hash,
            last_seq: report.last_seq,
            last_hash: report.last_hash.clone(),
        },
    ))
}

/// `, e.g. station st01/m-9 Cd at point P` naming one reading no entry covers, or empty.
async fn uncovered_example(tx: &Transaction<'_>) -> Result<String, StoreError> {
    let example = tx
        .query_opt(
            "SELECT r.source, r.source_id, r.msg_id, r.metal, r.point_id
             FROM readings_full r
             WHERE NOT EXISTS (SELECT 1 FROM archive a
                               WHERE (r.source = 'station' AND a.kind = 'station_message'
                                      AND a.ref = r.source_id || '/' || r.msg_id)
                                  OR (r.source = 'lab' AND a.kind = 'lab_batch'
                                      AND a.ref = r.source_id))
             LIMIT 1",
            &[],
        )
        .await?;
    Ok(example.map_or(String::new(), |r| {
        format!(
            ", e.g. {} {}/{} {} at point {}",
            r.get::<_, String>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3),
            r.get::<_, String>(4)
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reading as the digest sees it.
    fn row(msg_id: &str, metal: &str, value_mgkg: f64) -> DigestRow {
        DigestRow {
            msg_id: msg_id.into(),
            metal: metal.into(),
            sampled_at_us: 1_780_000_000_000_000,
            point_id: "441781-T-0001".into(),
            value_mgkg,
            value_orig: value_mgkg,
            unit_orig: "mg/kg".into(),
            detected: true,
            level: "none".into(),
            ph: Some(6.8),
            screening_mgkg: Some(0.3),
            intervention_mgkg: Some(2.0),
            standard_id: Some("GB15618-2018".into()),
        }
    }

    /// An entry whose raw SHA-256 and entry hash are what it records.
    fn sealed(
        seq: i64,
        prev: &str,
        kind: Kind,
        reference: &str,
        raw: &[u8],
        digest: &str,
    ) -> Entry {
        let mut e = Entry {
            seq,
            kind: kind.as_str().into(),
            reference: reference.into(),
            raw: raw.to_vec(),
            raw_sha256: sha256_hex(raw),
            digest: digest.into(),
            prev_hash: prev.into(),
            hash: String::new(),
            created_at: DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap_or_default(),
        };
        e.hash = e.recomputed_hash();
        e
    }

    fn station_entry(readings: &[DigestRow]) -> Entry {
        let digest = readings_digest(readings);
        sealed(
            1,
            GENESIS,
            Kind::StationMessage,
            "st01/m-1",
            b"{\"v\":1}",
            &digest,
        )
    }

    fn correction(old: DigestRow, new: DigestRow) -> Correction {
        Correction {
            source: "station".into(),
            source_id: "st01".into(),
            old,
            new,
            by: "wang.li".into(),
            reason: "re-analysis".into(),
            at: DateTime::from_timestamp_micros(1_780_000_100_000_000).unwrap_or_default(),
            db_user: "soilmon".into(),
        }
    }

    fn what(r: Result<Covers, Broken>) -> Break {
        match r {
            Ok(covers) => panic!("expected a break, got {covers:?}"),
            Err(b) => *b.what,
        }
    }

    #[test]
    fn good_entries_pass_and_name_what_they_cover() {
        let e = station_entry(&[row("m-1", "Cd", 0.45)]);
        assert_eq!(
            check_entry(1, GENESIS, &e),
            Ok(Covers::Station {
                station: "st01".into(),
                msg_id: "m-1".into()
            })
        );
        let lab = sealed(
            2,
            &e.hash,
            Kind::LabBatch,
            "B-1",
            b"csv",
            &readings_digest(&[]),
        );
        assert_eq!(
            check_entry(2, &e.hash, &lab),
            Ok(Covers::Lab {
                batch_id: "B-1".into()
            })
        );
        let c = correction(row("m-1", "Cd", 0.45), row("m-1", "Cd", 0.35));
        let raw = serde_json::to_vec(&c).unwrap_or_default();
        let digest = readings_digest(std::slice::from_ref(&c.new));
        let fix = sealed(
            3,
            &lab.hash,
            Kind::Correction,
            "station:st01/m-1/Cd",
            &raw,
            &digest,
        );
        assert_eq!(check_entry(3, &lab.hash, &fix), Ok(Covers::Nothing));
    }

    #[test]
    fn a_gap_in_seq_is_a_missing_entry() {
        let e = sealed(3, GENESIS, Kind::LabBatch, "B-1", b"csv", "d");
        let broken = check_entry(2, GENESIS, &e).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert_eq!(
            broken.to_string(),
            "archive entry seq 2 (? ): entry 2 is missing: the chain jumps from 1 to 3 \
             (lab_batch B-1)"
        );
    }

    #[test]
    fn each_edit_of_an_entry_is_its_own_break() {
        let good = station_entry(&[row("m-1", "Cd", 0.45)]);
        let other = "1".repeat(64);
        assert!(matches!(
            what(check_entry(1, &other, &good)),
            Break::PrevHash { previous, .. } if previous == other
        ));

        let mut raw = good.clone();
        raw.raw = b"{}".to_vec();
        assert!(matches!(
            what(check_entry(1, GENESIS, &raw)),
            Break::RawBytes { .. }
        ));

        let mut field = good.clone();
        field.reference = "st01/m-2".into();
        assert!(matches!(
            what(check_entry(1, GENESIS, &field)),
            Break::EntryHash { .. }
        ));

        let bad_ref = sealed(1, GENESIS, Kind::StationMessage, "st01", b"x", "d");
        assert_eq!(what(check_entry(1, GENESIS, &bad_ref)), Break::BadReference);

        let mut unknown = sealed(1, GENESIS, Kind::LabBatch, "B-1", b"x", "d");
        unknown.kind = "photo".into();
        unknown.hash = unknown.recomputed_hash();
        assert_eq!(
            what(check_entry(1, GENESIS, &unknown)).to_string(),
            "unknown kind \"photo\""
        );
    }

    #[test]
    fn a_correction_entry_covers_no_readings() {
        let c = correction(row("m-1", "Cd", 0.45), row("m-1", "Cd", 0.35));
        let raw = serde_json::to_vec(&c).unwrap_or_default();
        let digest = readings_digest(std::slice::from_ref(&c.new));
        let e = sealed(
            1,
            GENESIS,
            Kind::Correction,
            "station:st01/m-1/Cd",
            &raw,
            &digest,
        );
        let covers = check_entry(1, GENESIS, &e);
        assert_eq!(covers, Ok(Covers::Nothing));
        let none = CorrectionIndex::new();
        assert_eq!(
            check_readings(&e, &Covers::Nothing, Vec::new(), &none),
            Ok(0)
        );
    }

    #[test]
    fn a_correction_must_match_its_digest() {
        let c = correction(row("m-1", "Cd", 0.45), row("m-1", "Cd", 0.35));
        let raw = serde_json::to_vec(&c).unwrap_or_default();
        let wrong = readings_digest(std::slice::from_ref(&c.old));
        let e = sealed(
            1,
            GENESIS,
            Kind::Correction,
            "station:st01/m-1/Cd",
            &raw,
            &wrong,
        );
        assert_eq!(what(check_entry(1, GENESIS, &e)), Break::CorrectionDigest);
        let garbage = sealed(1, GENESIS, Kind::Correction, "c", b"not json", &wrong);
        assert_eq!(
            what(check_entry(1, GENESIS, &garbage)),
            Break::CorrectionDigest
        );
    }

    #[test]
    fn readings_as_archived_pass_and_are_counted() {
        let rows = vec![row("m-1", "Cd", 0.45), row("m-1", "Pb", 30.0)];
        let e = station_entry(&rows);
        let covers = check_entry(1, GENESIS, &e).unwrap_or(Covers::Nothing);
        let none = CorrectionIndex::new();
        assert_eq!(check_readings(&e, &covers, rows, &none), Ok(2));
    }

    #[test]
    fn an_edited_or_deleted_reading_breaks_its_entry() {
        let e = station_entry(&[row("m-1", "Cd", 0.45), row("m-1", "Pb", 30.0)]);
        let covers = check_entry(1, GENESIS, &e).unwrap_or(Covers::Nothing);
        let none = CorrectionIndex::new();
        let edited = vec![row("m-1", "Cd", 0.30), row("m-1", "Pb", 30.0)];
        let broken = check_readings(&e, &covers, edited, &none).unwrap_err();
        assert_eq!((broken.seq, broken.reference.as_str()), (1, "st01/m-1"));
        assert!(matches!(*broken.what, Break::Readings { stored: 2, .. }));
        let deleted = vec![row("m-1", "Pb", 30.0)];
        let broken = check_readings(&e, &covers, deleted, &none).unwrap_err();
        assert!(
            broken.to_string().contains("(1 reading(s) stored now;"),
            "{broken}"
        );
    }

    #[test]
    fn a_recorded_correction_is_undone_and_an_edit_after_it_is_not() {
        let e = station_entry(&[row("m-1", "Cd", 0.45)]);
        let covers = check_entry(1, GENESIS, &e).unwrap_or(Covers::Nothing);
        let mut index = CorrectionIndex::new();
        index
            .entry(("station".into(), "st01".into()))
            .or_default()
            .push((
                2,
                correction(row("m-1", "Cd", 0.45), row("m-1", "Cd", 0.35)),
            ));
        let corrected = vec![row("m-1", "Cd", 0.35)];
        assert_eq!(check_readings(&e, &covers, corrected, &index), Ok(1));

        let edited_after = vec![row("m-1", "Cd", 0.30)];
        let broken = check_readings(&e, &covers, edited_after, &index).unwrap_err();
        assert!(matches!(&*broken.what, Break::Correction { detail }
            if detail.contains("was changed after correction entry 2")));
        let broken = check_readings(&e, &covers, Vec::new(), &index).unwrap_err();
        assert!(
            matches!(&*broken.what, Break::Correction { detail } if detail.contains("is missing"))
        );
    }

    #[test]
    fn corrections_of_another_message_are_not_applied() {
        let mut index = CorrectionIndex::new();
        index
            .entry(("station".into(), "st01".into()))
            .or_default()
            .push((
                2,
                correction(row("m-2", "Cd", 0.45), row("m-2", "Cd", 0.35)),
            ));
        let m1 = Covers::Station {
            station: "st01".into(),
            msg_id: "m-1".into(),
        };
        assert!(m1.corrections(&index).is_empty());
        let m2 = Covers::Station {
            station: "st01".into(),
            msg_id: "m-2".into(),
        };
        assert_eq!(m2.corrections(&index).len(), 1);
    }

    #[test]
    fn a_head_past_the_last_entry_is_reported() {
        let report = VerifyReport {
            last_seq: 2,
            last_hash: "aa".into(),
            ..VerifyReport::default()
        };
        assert_eq!(check_head(&report, 2, "aa".into()), Ok(()));
        let broken = check_head(&report, 3, "bb".into()).unwrap_err();
        assert_eq!(
            broken.to_string(),
            "archive entry seq 3 (? ): the chain head records entry 3 (bb) but the chain ends \
             at entry 2 (aa): entries at the end were deleted"
        );
    }
}
