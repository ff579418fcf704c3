//! The tamper-evident archive: every accepted raw input, verbatim, in a hash chain.
//!
//! Each entry stores the raw bytes (a station message payload, a lab batch file, or the JSON
//! of an admin correction), their SHA-256, and a **readings digest**: the SHA-256 of the
//! canonical list of readings derived from that input (`readings_digest`). Entries are
//! numbered `seq = 1, 2, …` and chained:
//!
//! ```text
//! entry_hash = SHA-256( "soilmon-archive-v1"
//!                       ‖ seq ‖ prev_hash ‖ kind ‖ ref ‖ raw_sha256 ‖ readings_digest
//!                       ‖ created_at (µs since the Unix epoch) )
//! ```
//!
//! every field length-prefixed (u64 big-endian), `prev_hash` being the previous entry's
//! `entry_hash` (64 zeros for the first). Editing, deleting or reordering an entry breaks
//! the chain; editing or deleting a reading changes the digest of its entry. `soilmon
//! verify` ([`verify()`]) recomputes all of it.
//!
//! # Appending (station messages, lab batches)
//!
//! Appends happen **in the same transaction** as the data they describe, as the last step
//! before COMMIT (the head lock is then held briefly, and always taken after any other row
//! lock, which rules out deadlocks between writers). One call takes the head lock once,
//! whatever the number of entries:
//!
//! ```ignore
//! // station messages: done by store::writer::finish for each freshly stored message, on
//! // the head its last commit left (a guess, checked under the lock: see HeadGuess)
//! archive::append_batch(&tx, &entries, ctx.archive_head).await?;
//! // a lab batch: one line after inserting its readings (`judged`: the rows actually stored)
//! archive::append(&tx, Kind::LabBatch, &batch_id, &raw_file_bytes,
//!                 &archive::digest_of(&judged)).await?;
//! ```
//!
//! For a lab batch, `verify` recomputes the digest from every `readings` row with
//! `source = 'lab'` and `source_id = batch_id`, so the batch id must be unique per archived
//! batch and the digest must cover exactly the rows that batch stored.
//!
//! # Corrections
//!
//! The database refuses UPDATE/DELETE on `readings` and `archive` (grants and a trigger).
//! [`correct`] is the one legitimate path: it updates a reading inside a transaction that
//! sets `soilmon.correction = on` and appends a `correction` entry whose raw JSON records who,
//! when, why, and the old and new values. `verify` undoes the recorded corrections before
//! recomputing the original entry's digest, so a documented correction verifies and an
//! undocumented edit does not.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Transaction;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;

use super::keys::{level_code, Keys};
use super::StoreError;
use crate::domain::reading::JudgedReading;

/// `prev_hash` of the first entry.
pub(crate) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an archive entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One accepted station message (ref `station_id/msg_id`).
    StationMessage,
    /// One accepted lab batch file (ref: the batch id).
    LabBatch,
    /// An admin correction of one reading (raw: [`Correction`] as JSON).
    Correction,
    /// A console action on an incident (ref: the incident id; raw: the action as JSON,
    /// see `store::console::ActionRecord`); derives no readings.
    IncidentAction,
}

impl Kind {
    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::StationMessage => "station_message",
            Kind::LabBatch => "lab_batch",
            Kind::Correction => "correction",
            Kind::IncidentAction => "incident_action",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "station_message" => Some(Kind::StationMessage),
            "lab_batch" => Some(Kind::LabBatch),
            "correction" => Some(Kind::Correction),
            "incident_action" => Some(Kind::IncidentAction),
            _ => None,
        }
    }
}

/// One entry to append: everything but its place in the chain, so that a batch can make its
/// entries (hashing each raw input) before it waits for the chain head.
#[derive(Debug, Clone)]
pub(crate) struct NewEntry<'a> {
    /// Kind of input.
    pub kind: Kind,
    /// Reference: `station_id/msg_id`, a lab batch id, or `correction`.
    pub reference: String,
    /// The raw input, verbatim.
    pub raw: &'a [u8],
    /// SHA-256 (hex) of `raw`.
    pub raw_sha256: String,
    /// [`readings_digest`] of the readings derived from it.
    pub readings_digest: String,
}

impl<'a> NewEntry<'a> {
    /// An entry for `raw`, hashed now.
    pub(crate) fn new(
        kind: Kind,
        reference: String,
        raw: &'a [u8],
        readings_digest: String,
    ) -> NewEntry<'a> {
        NewEntry {
            kind,
            reference,
            raw,
            raw_sha256: sha256_hex(raw),
            readings_digest,
        }
    }
}

/// An entry as appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number.
    pub seq: i64,
    /// Its entry hash (the new head).
    pub entry_hash: String,
}

/// The fields of a reading that the digest covers (those an edit would falsify).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigestRow {
    /// Station `msg_id` or lab sample id.
    pub msg_id: String,
    /// Analyte symbol.
    pub metal: String,
    /// Sampling time, µs since the Unix epoch (as stored).
    pub sampled_at_us: i64,
    /// Monitoring point.
    pub point_id: String,
    /// Value in mg/kg.
    pub value_mgkg: f64,
    /// Value as sent.
    pub value_orig: f64,
    /// Unit as sent.
    pub unit_orig: String,
    /// Detected flag.
    pub detected: bool,
    /// Judgement level.
    pub level: String,
    /// pH used.
    pub ph: Option<f64>,
    /// Screening value used.
    pub screening_mgkg: Option<f64>,
    /// Intervention value used.
    pub intervention_mgkg: Option<f64>,
    /// Standard used.
    pub standard_id: Option<String>,
}

/// The digest fields of a reading, borrowed (see [`DigestRow`]).
#[derive(Debug, Clone, Copy)]
struct DigestView<'a> {
    msg_id: &'a str,
    metal: &'a str,
    sampled_at_us: i64,
    point_id: &'a str,
    value_mgkg: f64,
    value_orig: f64,
    unit_orig: &'a str,
    detected: bool,
    level: &'a str,
    ph: Option<f64>,
    screening_mgkg: Option<f64>,
    intervention_mgkg: Option<f64>,
    standard_id: Option<&'a str>,
}

impl<'a> DigestView<'a> {
    /// The digest fields of a judged reading as it will be stored.
    fn of(j: &'a JudgedReading) -> DigestView<'a> {
        let t = j.judgement.thresholds.as_ref();
        DigestView {
            msg_id: &j.msg_id,
            metal: j.metal.symbol(),
            sampled_at_us: j.sampled_at.timestamp_micros(),
            point_id: &j.point_id,
            value_mgkg: j.value_mgkg,
            value_orig: j.value_orig,
            unit_orig: &j.unit_orig,
            detected: j.detected,
            level: j.judgement.level.as_str(),
            ph: j.ph,
            screening_mgkg: t.map(|t| t.screening),
            intervention_mgkg: t.and_then(|t| t.intervention),
            standard_id: t.map(|t| t.standard_id.as_str()),
        }
    }

    /// The key that identifies the reading within its source (the digest's order).
    fn key(&self) -> (&'a str, &'a str, i64) {
        (self.msg_id, self.metal, self.sampled_at_us)
    }

    /// Feeds the fields, length-prefixed, into `h`.
    fn feed(&self, h: &mut Sha256) {
        field(h, self.msg_id.as_bytes());
        field(h, self.metal.as_bytes());
        field(h, &self.sampled_at_us.to_be_bytes());
        field(h, self.point_id.as_bytes());
        field(h, &self.value_mgkg.to_bits().to_be_bytes());
        field(h, &self.value_orig.to_bits().to_be_bytes());
        field(h, self.unit_orig.as_bytes());
        field(h, &[u8::from(self.detected)]);
        field(h, self.level.as_bytes());
        opt_f64(h, self.ph);
        opt_f64(h, self.screening_mgkg);
        opt_f64(h, self.intervention_mgkg);
        field(h, self.standard_id.unwrap_or("").as_bytes());
    }
}

impl DigestRow {
    /// The digest row of a judged reading as it will be stored.
    pub(crate) fn of(j: &JudgedReading) -> DigestRow {
        let v = DigestView::of(j);
        DigestRow {
            msg_id: v.msg_id.to_string(),
            metal: v.metal.to_string(),
            sampled_at_us: v.sampled_at_us,
            point_id: v.point_id.to_string(),
            value_mgkg: v.value_mgkg,
            value_orig: v.value_orig,
            unit_orig: v.unit_orig.to_string(),
            detected: v.detected,
            level: v.level.to_string(),
            ph: v.ph,
            screening_mgkg: v.screening_mgkg,
            intervention_mgkg: v.intervention_mgkg,
            standard_id: v.standard_id.map(str::to_string),
        }
    }

    /// The key that identifies the reading within its source.
    fn key(&self) -> (&str, &str, i64) {
        (&self.msg_id, &self.metal, self.sampled_at_us)
    }

    fn view(&self) -> DigestView<'_> {
        DigestView {
            msg_id: &self.msg_id,
            metal: &self.metal,
            sampled_at_us: self.sampled_at_us,
            point_id: &self.point_id,
            value_mgkg: self.value_mgkg,
            value_orig: self.value_orig,
            unit_orig: &self.unit_orig,
            detected: self.detected,
            level: &self.level,
            ph: self.ph,
            screening_mgkg: self.screening_mgkg,
            intervention_mgkg: self.intervention_mgkg,
            standard_id: self.standard_id.as_deref(),
        }
    }
}

/// The digest columns of readings ([`DigestRow::from_row`]: `msg_id, metal, sampled_at,
/// point_id, value_mgkg, value_orig, unit_orig, detected, level, ph, screening_mgkg,
/// intervention_mgkg, standard_id`, as `readings_full` names them), then `source`, `source_id`, `land_use`, `sample_key`,
/// `point_key` and the metal code, of the readings of samples `s` of sources `so`. A
/// caller adds the `WHERE` clause on `so` and `s` (or on `p`, `m` and `r`). Readings are found
/// from their sample through the one index (point, metal, time) and must match the sample's
/// key; every dimension is an inner join, so a reading whose sample, point, unit or basis is
/// gone is not returned (and `verify` reports its entry).
pub(crate) const DIGEST_SELECT: &str = "SELECT s.msg_id, m.symbol, r.sampled_at, p.point_id, \
     r.value_mgkg, r.value_orig, u.spelling, r.detected, l.name, s.ph, b.screening_mgkg, \
     b.intervention_mgkg, b.standard_id, so.source, so.source_id, b.land_use, r.sample_key, \
     r.point_key, r.metal \
     FROM sources so \
     JOIN samples s ON s.source_key = so.source_key \
     JOIN readings r ON r.point_key = s.point_key \
          AND r.metal = ANY ('{1,2,3,4,5,6,7,8,9}'::smallint[]) \
          AND r.sampled_at = s.sampled_at AND r.sample_key = s.sample_key \
     JOIN points p ON p.point_key = r.point_key \
     JOIN metals m ON m.metal = r.metal \
     JOIN units u ON u.unit = r.unit_orig \
     JOIN levels l ON l.level = r.level \
     JOIN judgement_bases b ON b.basis_key = r.basis_key";

impl DigestRow {
    /// Reads a row selected with [`DIGEST_SELECT`] (its first 13 columns).
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> DigestRow {
        let at: DateTime<Utc> = r.get(2);
        DigestRow {
            msg_id: r.get(0),
            metal: r.get(1),
            sampled_at_us: at.timestamp_micros(),
            point_id: r.get(3),
            value_mgkg: r.get(4),
            value_orig: r.get(5),
            unit_orig: r.get(6),
            detected: r.get(7),
            level: r.get(8),
            ph: r.get(9),
            screening_mgkg: r.get(10),
            intervention_mgkg: r.get(11),
            standard_id: r.get(12),
        }
    }
}

/// Feeds one length-prefixed field into a hasher.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn opt_f64(h: &mut Sha256, v: Option<f64>) {
    match v {
        None => field(h, b""),
        Some(x) => field(h, &x.to_bits().to_be_bytes()),
    }
}

/// SHA-256 (hex) of the canonical list of readings: sorted by (msg_id, metal, sampled_at),
/// every field length-prefixed, floats by their IEEE-754 bits. An empty list has a digest
/// too (a message whose readings were all deleted is then detected).
pub(crate) fn readings_digest(rows: &[DigestRow]) -> String {
    digest_views(rows.iter().map(DigestRow::view).collect())
}

/// [`readings_digest`] of rows already in its order (by msg_id, metal, sampled_at), made one at
/// a time: a large batch need not be held as a list of digest rows.
pub(crate) fn readings_digest_in_order<R: std::borrow::Borrow<DigestRow>>(
    rows: impl ExactSizeIterator<Item = R>,
) -> String {
    let mut h = digest_start(rows.len());
    for r in rows {
        r.borrow().view().feed(&mut h);
    }
    hex::encode(h.finalize())
}

/// [`readings_digest`] of judged readings (what a writer passes to [`append`]), without
/// copying them.
pub(crate) fn digest_of(rows: &[JudgedReading]) -> String {
    digest_views(rows.iter().map(DigestView::of).collect())
}

/// The digest of `views` in any order.
fn digest_views(mut views: Vec<DigestView<'_>>) -> String {
    views.sort_by(|a, b| a.key().cmp(&b.key()));
    let mut h = digest_start(views.len());
    for v in &views {
        v.feed(&mut h);
    }
    hex::encode(h.finalize())
}

/// A hasher fed with the digest's header for `n` readings.
fn digest_start(n: usize) -> Sha256 {
    let mut h = Sha256::new();
    field(&mut h, b"soilmon-readings-v1");
    field(&mut h, &(n as u64).to_be_bytes());
    h
}

/// SHA-256 (hex) of raw bytes.
pub(crate) fn sha256_hex(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// The fields an entry hash commits to.
#[derive(Debug, Clone)]
pub(crate) struct EntryFields<'a> {
    /// Sequence number.
    pub seq: i64,
    /// Previous entry's hash.
    pub prev_hash: &'a str,
    /// Kind spelling.
    pub kind: &'a str,
    /// Reference.
    pub reference: &'a str,
    /// SHA-256 of the raw bytes (hex).
    pub raw_sha256: &'a str,
    /// Readings digest (hex).
    pub readings_digest: &'a str,
    /// Creation time, µs since the Unix epoch.
    pub created_at_us: i64,
}

/// The entry hash (hex) of an entry.
pub(crate) fn entry_hash(f: &EntryFields<'_>) -> String {
    let mut h = Sha256::new();
    field(&mut h, b"soilmon-archive-v1");
    field(&mut h, &f.seq.to_be_bytes());
    field(&mut h, f.prev_hash.as_bytes());
    field(&mut h, f.kind.as_bytes());
    field(&mut h, f.reference.as_bytes());
    field(&mut h, f.raw_sha256.as_bytes());
    field(&mut h, f.readings_digest.as_bytes());
    field(&mut h, &f.created_at_us.to_be_bytes());
    hex::encode(h.finalize())
}

/// Appends one entry (takes the chain head lock; see the module docs).
pub(crate) async fn append(
    tx: &Transaction<'_>,
    kind: Kind,
    reference: &str,
    raw: &[u8],
    readings_digest: &str,
) -> Result<Appended, StoreError> {
    let entry = NewEntry::new(
        kind,
        reference.to_string(),
        raw,
        readings_digest.to_string(),
    );
    let mut out = append_batch(tx, std::slice::from_ref(&entry), None).await?;
    out.pop()
        .ok_or_else(|| StoreError::Archive("append returned no entry".into()))
}

/// The archive head as the station writer left it with its last commit: the sequence number
/// and hash of its last entry. A guess, never trusted: [`append_batch`] sends its entries on
/// it in the same round trip as the head lock, and the statements themselves store them only
/// if the locked head is still this one. Another writer's append in between (a lab batch, a
/// correction, a console action, another instance) makes it wrong; the entries are then sent
/// again on the head read under the lock, one round trip more, as without a guess.
#[derive(Debug, Default)]
pub struct HeadGuess(Mutex<Option<Head>>);

/// A chain head: the last entry's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: i64,
    hash: String,
}

impl HeadGuess {
    /// The head after `appended`, the entries of a batch that has committed.
    pub(crate) fn committed(&self, appended: &[Appended]) {
        if let Some(last) = appended.last() {
            *self.lock() = Some(Head {
                seq: last.seq,
                hash: last.entry_hash.clone(),
            });
        }
    }

    fn get(&self) -> Option<Head> {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Head>> {
        // The guess is only ever checked, never trusted: a poisoned one is still usable.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The statements of an append, prepared.
struct AppendStatements {
    lock_head: Statement,
    insert: Statement,
    move_head: Statement,
}

/// A batch's entries chained onto a head, as the insert's parameters.
struct Chained<'a> {
    /// The head the chain starts from.
    from: Head,
    /// The head after its last entry.
    to: Head,
    seqs: Vec<i64>,
    kinds: Vec<&'static str>,
    refs: Vec<&'a str>,
    raws: Vec<&'a [u8]>,
    shas: Vec<&'a str>,
    digests: Vec<&'a str>,
    prevs: Vec<String>,
    hashes: Vec<String>,
    created_at: DateTime<Utc>,
}

impl<'a> Chained<'a> {
    fn new(from: Head, entries: &'a [NewEntry<'a>], created_at: DateTime<Utc>) -> Chained<'a> {
        let created_us = created_at.timestamp_micros();
        let mut seq = from.seq;
        let mut prev = from.hash.clone();
        let mut prevs = Vec::with_capacity(entries.len());
        let mut hashes = Vec::with_capacity(entries.len());
        for e in entries {
            seq += 1;
            let hash = entry_hash(&EntryFields {
                seq,
                prev_hash: &prev,
                kind: e.kind.as_str(),
                reference: &e.reference,
                raw_sha256: &e.raw_sha256,
                readings_digest: &e.readings_digest,
                created_at_us: created_us,
            });
            prevs.push(std::mem::replace(&mut prev, hash.clone()));
            hashes.push(hash);
        }
        Chained {
            seqs: (from.seq + 1..=seq).collect(),
            kinds: entries.iter().map(|e| e.kind.as_str()).collect(),
            refs: entries.iter().map(|e| e.reference.as_str()).collect(),
            raws: entries.iter().map(|e| e.raw).collect(),
            shas: entries.iter().map(|e| e.raw_sha256.as_str()).collect(),
            digests: entries.iter().map(|e| e.readings_digest.as_str()).collect(),
            prevs,
            hashes,
            created_at,
            from,
            to: Head { seq, hash: prev },
        }
    }

    /// Sends the insert and the head's move, both conditional on the head still being
    /// `from` (one round trip); true when they stored the entries.
    async fn store(&self, tx: &Transaction<'_>, st: &AppendStatements) -> Result<bool, StoreError> {
        let insert_params: [&(dyn ToSql + Sync); 11] = [
            &self.seqs,
            &self.kinds,
            &self.refs,
            &self.raws,
            &self.shas,
            &self.digests,
            &self.prevs,
            &self.hashes,
            &self.created_at,
            &self.from.seq,
            &self.from.hash,
        ];
        let head_params: [&(dyn ToSql + Sync); 4] =
            [&self.to.seq, &self.to.hash, &self.from.seq, &self.from.hash];
        let (inserted, moved) = tokio::join!(
            biased;
            tx.execute(&st.insert, &insert_params),
            tx.execute(&st.move_head, &head_params)
        );
        let (inserted, moved) = (inserted?, moved?);
        match (inserted, moved) {
            (n, 1) if n == self.seqs.len() as u64 => Ok(true),
            (0, 0) => Ok(false),
            (n, m) => Err(StoreError::Archive(format!(
                "append on head {}: {n} entries stored of {}, head moved {m} times",
                self.from.seq,
                self.seqs.len()
            ))),
        }
    }

    fn appended(self) -> Vec<Appended> {
        self.seqs
            .into_iter()
            .zip(self.hashes)
            .map(|(seq, entry_hash)| Appended { seq, entry_hash })
            .collect()
    }
}

/// Appends entries in order, taking the chain head lock once. Returns them as appended.
///
/// With a `guess` of the head (the station writer's), the entries go out chained onto it in
/// the same round trip as the lock: one round trip fewer in the serial part of a batch when
/// the guess is right, two more statements (storing nothing) when it is not. Without one,
/// the head is read under the lock first.
pub(crate) async fn append_batch(
    tx: &Transaction<'_>,
    entries: &[NewEntry<'_>],
    guess: Option<&HeadGuess>,
) -> Result<Vec<Appended>, StoreError> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let st = AppendStatements {
        lock_head: tx
            .prepare_cached("SELECT seq, hash FROM archive_head WHERE id FOR UPDATE")
            .await?,
        // Both store only on the head they were chained onto ($10, $11 and $3, $4): the
        // lock statement before them holds the head's row, so what they see stays true.
        insert: tx
            .prepare_cached(
                "INSERT INTO archive (seq, kind, ref, raw, raw_sha256, readings_digest,
                                      prev_hash, entry_hash, created_at)
                 SELECT s, k, r, w, h, d, p, e, $9
                 FROM unnest($1::int8[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                             $6::text[], $7::text[], $8::text[]) AS u(s, k, r, w, h, d, p, e)
                 WHERE EXISTS (SELECT 1 FROM archive_head
                               WHERE id AND seq = $10 AND hash = $11)",
            )
            .await?,
        move_head: tx
            .prepare_cached(
                "UPDATE archive_head SET seq = $1, hash = $2
                 WHERE id AND seq = $3 AND hash = $4",
            )
            .await?,
    };
    // Microsecond precision, as timestamptz stores it, so the hash recomputes exactly.
    let created_at = Utc::now().trunc_subsecs(6);
    // A failed append leaves the guess as it was: it is still the last committed head, and
    // the conditional statements check it again on the retry.
    let head = match guess.and_then(HeadGuess::get) {
        Some(head) => {
            let chained = Chained::new(head, entries, created_at);
            // In this order on the server: the lock first, then the conditional writes.
            let (head, stored) = tokio::join!(
                biased;
                tx.query_one(&st.lock_head, &[]),
                chained.store(tx, &st)
            );
            let head = head?;
            if stored? {
                return Ok(chained.appended());
            }
            head
        }
        None => tx.query_one(&st.lock_head, &[]).await?,
    };
    let chained = Chained::new(
        Head {
            seq: head.get(0),
            hash: head.get(1),
        },
        entries,
        created_at,
    );
    if chained.store(tx, &st).await? {
        Ok(chained.appended())
    } else {
        Err(StoreError::Archive(
            "the archive head moved while this transaction held its lock".into(),
        ))
    }
}

/// The raw JSON of a `correction` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    /// `station` or `lab`.
    pub source: String,
    /// Station id or lab batch id.
    pub source_id: String,
    /// The reading before.
    pub old: DigestRow,
    /// The reading after.
    pub new: DigestRow,
    /// Who made the correction.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: DateTime<Utc>,
    /// Database role that executed it.
    pub db_user: String,
}

/// Readings of one source as the archive saw them: undoes recorded corrections (newest
/// first) after checking that each one's `new` state is what is stored now.
///
/// `corrections`: the corrections of readings among `rows`, in seq order.
/// Returns the rows as originally stored, or a description of the inconsistency.
pub(crate) fn undo_corrections(
    mut rows: Vec<DigestRow>,
    corrections: &[&(i64, Correction)],
) -> Result<Vec<DigestRow>, String> {
    for (seq, c) in corrections.iter().rev().map(|e| (e.0, &e.1)) {
        let Some(row) = rows.iter_mut().find(|r| r.key() == c.new.key()) else {
            return Err(format!(
                "the reading corrected by entry {seq} ({} {} {}) is missing",
                c.new.msg_id, c.new.metal, c.new.point_id
            ));
        };
        if *row != c.new {
            return Err(format!(
                "reading {} {} at point {} was changed after correction entry {seq} \
                 (stored value {} mg/kg, correction says {} mg/kg)",
                c.new.msg_id, c.new.metal, c.new.point_id, row.value_mgkg, c.new.value_mgkg
            ));
        }
        *row = c.old.clone();
    }
    Ok(rows)
}

/// Corrections grouped by (source, source_id), in seq order.
pub(crate) type CorrectionIndex = HashMap<(String, String), Vec<(i64, Correction)>>;

pub mod verify;

// Known-answer vectors of the hash formats (every stored entry commits to them).
#[cfg(test)]
mod kat;
pub use verify::{verify, Break, Broken, VerifyReport};

/// An admin correction of one stored reading.
#[derive(Debug, Clone)]
pub struct CorrectionRequest {
    /// Monitoring point.
    pub point_id: String,
    /// Analyte.
    pub metal: crate::domain::metal::Metal,
    /// Sampling time of the reading.
    pub sampled_at: DateTime<Utc>,
    /// Station id or lab batch id, when the point/metal/time is ambiguous.
    pub source_id: Option<String>,
    /// `msg_id` / sample id, when still ambiguous.
    pub msg_id: Option<String>,
    /// The corrected value, mg/kg.
    pub value_mgkg: f64,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// Corrects one reading (value in mg/kg; the level is judged again with the reading's land
/// use and pH) and appends a `correction` entry recording who, when, why, old and new, all in
/// one transaction. Incidents and alerts already sent are not re-evaluated.
///
/// Needs a database role with UPDATE on `readings` (the schema owner or an admin role, not
/// `soilmon_service`).
pub async fn correct(
    client: &mut deadpool_postgres::Client,
    standards: &crate::domain::standard::Standards,
    req: &CorrectionRequest,
) -> Result<(Correction, Appended), StoreError> {
    check_request(req)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT set_config('soilmon.correction', 'on', true)", &[])
        .await?;
    let stored = find_reading(&tx, req).await?;
    let (new, judgement) = corrected(standards, &stored, req);
    let keys = Keys::resolve(
        &tx,
        &[(stored.land_use, judgement.thresholds.clone())],
        std::slice::from_ref(&new.unit_orig),
    )
    .await?;
    update_reading(&tx, &stored, req.sampled_at, &new, &keys, &judgement).await?;
    let db_user: String = tx.query_one("SELECT current_user::text", &[]).await?.get(0);
    let correction = Correction {
        source: stored.source,
        source_id: stored.source_id,
        old: stored.old,
        new,
        by: req.by.clone(),
        reason: req.reason.clone(),
        at: Utc::now(),
        db_user,
    };
    let appended = append_correction(&tx, &correction).await?;
    tx.commit().await?;
    Ok((correction, appended))
}

/// Refuses a correction without an author and a reason, or with a value that is not a
/// finite, non-negative number.
fn check_request(req: &CorrectionRequest) -> Result<(), StoreError> {
    if req.reason.trim().is_empty() || req.by.trim().is_empty() {
        return Err(StoreError::Refused(
            "a correction needs --by and --reason".into(),
        ));
    }
    if !req.value_mgkg.is_finite() || req.value_mgkg < 0.0 {
        return Err(StoreError::Refused(
            "the corrected value must be a finite, non-negative number".into(),
        ));
    }
    Ok(())
}

/// The one reading a correction names, as stored.
struct StoredReading {
    /// Its digest fields.
    old: DigestRow,
    /// `station` or `lab`.
    source: String,
    /// Station id or lab batch id.
    source_id: String,
    /// Land use of its point, for judging it again.
    land_use: crate::domain::point::LandUse,
    /// Its row: sample key, point key, metal code (with the sampling time, the row's key).
    sample_key: i64,
    point_key: i32,
    metal_code: i16,
}

/// Locks and reads the one reading `req` names; refuses none, several, or one whose stored
/// land use is unknown.
async fn find_reading(
    tx: &Transaction<'_>,
    req: &CorrectionRequest,
) -> Result<StoredReading, StoreError> {
    let rows = tx
        .query(
            &format!(
                "{DIGEST_SELECT}
                 WHERE p.point_id = $1 AND m.symbol = $2 AND r.sampled_at = $3
                   AND ($4::text IS NULL OR so.source_id = $4)
                   AND ($5::text IS NULL OR s.msg_id = $5)
                 FOR UPDATE OF r"
            ),
            &[
                &req.point_id,
                &req.metal.symbol(),
                &req.sampled_at,
                &req.source_id,
                &req.msg_id,
            ],
        )
        .await?;
    let row = match rows.as_slice() {
        [] => {
            return Err(StoreError::Refused(format!(
                "no reading of {} at point {} sampled at {}",
                req.metal, req.point_id, req.sampled_at
            )))
        }
        [one] => one,
        many => {
            let list: Vec<String> = many
                .iter()
                .map(|r| format!("{}/{}", r.get::<_, String>(14), r.get::<_, String>(0)))
                .collect();
            return Err(StoreError::Refused(format!(
                "{} readings match; choose one with --source-id/--msg-id: {}",
                many.len(),
                list.join(", ")
            )));
        }
    };
    let land_use_text: String = row.get(15);
    let Some(land_use) = crate::domain::point::LandUse::parse(&land_use_text) else {
        return Err(StoreError::Refused(format!(
            "stored land use {land_use_text:?} is unknown"
        )));
    };
    Ok(StoredReading {
        old: DigestRow::from_row(row),
        source: row.get(13),
        source_id: row.get(14),
        land_use,
        sample_key: row.get(16),
        point_key: row.get(17),
        metal_code: row.get(18),
    })
}

/// The reading with the corrected value (in mg/kg, as sent) and judged again with its land use
/// and pH, and that judgement.
fn corrected(
    standards: &crate::domain::standard::Standards,
    stored: &StoredReading,
    req: &CorrectionRequest,
) -> (DigestRow, crate::domain::judge::Judgement) {
    let old = &stored.old;
    let j = crate::domain::judge::judge(
        standards,
        stored.land_use,
        old.ph,
        req.metal,
        req.value_mgkg,
        old.detected,
    );
    let t = j.thresholds.as_ref();
    let row = DigestRow {
        value_mgkg: req.value_mgkg,
        value_orig: req.value_mgkg,
        unit_orig: "mg/kg".into(),
        level: j.level.as_str().to_string(),
        screening_mgkg: t.map(|t| t.screening),
        intervention_mgkg: t.and_then(|t| t.intervention),
        standard_id: t.map(|t| t.standard_id.clone()),
        ..old.clone()
    };
    (row, j)
}

/// Writes the corrected value, unit, level and judgement basis into the stored reading. The
/// whole basis moves with the new judgement (standard, version, column, pH band and the
/// thresholds' sources, not only the values the digest covers).
async fn update_reading(
    tx: &Transaction<'_>,
    stored: &StoredReading,
    sampled_at: DateTime<Utc>,
    new: &DigestRow,
    keys: &Keys,
    judgement: &crate::domain::judge::Judgement,
) -> Result<(), StoreError> {
    let basis = keys
        .basis(stored.land_use, judgement.thresholds.as_ref())
        .ok_or_else(|| StoreError::Keys("the corrected reading's basis".into()))?;
    let unit = keys
        .unit(&new.unit_orig)
        .ok_or_else(|| StoreError::Keys("the corrected reading's unit".into()))?;
    tx.execute(
        "UPDATE readings SET value_mgkg = $5, value_orig = $6, unit_orig = $7, level = $8,
                basis_key = $9
         WHERE sample_key = $1 AND point_key = $2 AND metal = $3 AND sampled_at = $4",
        &[
            &stored.sample_key,
            &stored.point_key,
            &stored.metal_code,
            &sampled_at,
            &new.value_mgkg,
            &new.value_orig,
            &unit,
            &level_code(judgement.level),
            &basis,
        ],
    )
    .await?;
    Ok(())
}

/// Appends the `correction` entry: its raw JSON, its reference
/// (`source:source_id/msg_id/metal`) and the digest of the new reading.
async fn append_correction(tx: &Transaction<'_>, c: &Correction) -> Result<Appended, StoreError> {
    let raw = serde_json::to_vec(c)
        .map_err(|e| StoreError::Archive(format!("encoding the correction: {e}")))?;
    let reference = format!(
        "{}:{}/{}/{}",
        c.source, c.source_id, c.new.msg_id, c.new.metal
    );
    let digest = readings_digest(std::slice::from_ref(&c.new));
    append(tx, Kind::Correction, &reference, &raw, &digest).await
}
