//! The batch writer: one transaction per batch of MQTT messages.
//!
//! In that transaction: new messages are recorded under their idempotency key
//! (station, msg_id) as `samples` rows (by binary COPY; by an insert that skips stored keys
//! when the batch holds a redelivery); their readings are judged and inserted; incident tracks are updated
//! and alert events written to the outbox; refused messages go to quarantine with a reject
//! reply in the outbox. Only after the commit does the collector acknowledge the messages,
//! so a crash at any point leads to redelivery, which this writer absorbs:
//! a redelivered message matches its stored hash and changes nothing.
//!
//! Each freshly stored message is also appended, verbatim, to the tamper-evident archive
//! ([`super::archive`]) in the same transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Transaction};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::archive::{self, Kind, NewEntry};
use super::incidents;
use super::keys::{Keys, SampleKeys};
use super::outbox;
use super::readings::{self, SampleRef};
use super::samples::{self, NewSample};
use super::StoreError;
use crate::domain::reading::JudgedReading;
use crate::domain::sample::{RejectCode, Rejection, Sample};

/// One message as it came off the broker, with the outcome of parsing it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic it was published on.
    pub topic: String,
    /// Station id from the topic, when the topic had the expected shape.
    pub station_id: Option<String>,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// Parsed sample or the reason it was refused.
    pub parsed: Result<Sample, Rejection>,
}

pub use super::Context;
use crate::domain::judge::judging_ph;
use crate::domain::reading::judge_sample;

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages in the batch.
    pub messages: usize,
    /// The transaction, from its start to COMMIT.
    pub took: std::time::Duration,
    /// Messages stored for the first time.
    pub stored: usize,
    /// Readings inserted.
    pub readings: usize,
    /// Readings per judgement level.
    pub levels: BTreeMap<&'static str, usize>,
    /// Redelivered copies of already-stored messages (acked, nothing written).
    pub duplicates: usize,
    /// Refused messages per reason code (newly quarantined).
    pub rejected: BTreeMap<&'static str, usize>,
    /// Alert events written to the outbox.
    pub alerts: usize,
    /// (point, metal) pairs whose incident tracks were read from the database (not kept in
    /// the writer's memory, see [`super::incidents::TrackCache`]).
    pub tracks_read: usize,
}

impl BatchReport {
    /// True when the batch wrote anything the publisher should send.
    pub fn has_outbox(&self) -> bool {
        self.alerts > 0 || self.rejected.values().any(|n| *n > 0)
    }
}

/// A refusal on its way to quarantine.
#[derive(Debug)]
struct Refusal<'a> {
    msg: &'a Received,
    code: RejectCode,
    detail: String,
    msg_id: Option<String>,
}

/// A batch's open transaction between its phases (see [`stage`], [`copy_readings`] and
/// [`finish`]).
pub(crate) struct Staged<'a> {
    tx: Transaction<'a>,
    report: BatchReport,
    refusals: Vec<Refusal<'a>>,
    fresh: Vec<(&'a Received, &'a Sample)>,
    judged: Vec<JudgedReading>,
    /// The sample of each of `judged`.
    samples: Vec<SampleRef>,
    /// The judgement basis and unit keys of `judged`, resolved before the transaction.
    keys: Keys,
    /// The archive entries of `fresh`, in order.
    archive: Vec<NewEntry<'a>>,
    received: usize,
    started: std::time::Instant,
}

/// Phase one of a batch: opens its transaction, records the new messages under their
/// idempotency keys (telling redeliveries from conflicting reuses) and judges their readings.
/// It touches no row another batch's [`copy_readings`] or [`finish`] needs, so the collector
/// runs it while earlier batches are still copying or finishing; a message an earlier batch
/// is storing makes this one wait on its key and then count as a redelivery.
pub(crate) async fn stage<'a>(
    client: &'a mut Client,
    ctx: &Context<'_>,
    batch: &'a [Received],
) -> Result<Staged<'a>, StoreError> {
    let mut report = BatchReport::default();
    let mut refusals: Vec<Refusal> = Vec::new();
    let candidates = sort_out(batch, &mut report, &mut refusals);

    // Judged before the transaction, and their judgement bases and units found or created
    // outside it (committed at once: append-only dimension rows). A batch transaction never
    // holds a key row another batch needs: the batches commit in order, so a later batch's
    // uncommitted key row that an earlier batch waits on would stall both until the lock
    // timeout, again on every retry.
    let mut judged_candidates = judge_candidates(ctx, &candidates);
    let stations = distinct(candidates.iter().map(|(_, s)| s.station_id.as_str()));
    let points = distinct(candidates.iter().map(|(_, s)| s.point_id.as_str()));
    let (keys, sample_keys) = tokio::join!(
        Keys::for_readings_cached(&*client, ctx.key_cache, judged_candidates.iter().flatten()),
        SampleKeys::resolve(&*client, &stations, &points, candidates.len())
    );
    let (keys, sample_keys) = (keys?, sample_keys?);

    let started = std::time::Instant::now();
    let tx = client.transaction().await?;
    // The collector holds a staged batch open while the one before it finishes: should a
    // lock wait ever outlast this, the batch fails and is retried rather than hanging. Sent
    // ahead of the samples' statements, without waiting for its answer (one round trip less).
    let (timeout, refs) = tokio::join!(
        biased;
        tx.batch_execute("SET LOCAL lock_timeout = '60s'"),
        record_samples(&tx, ctx, &candidates, &sample_keys)
    );
    timeout?;
    let refs = refs?;
    let mut fresh: Vec<(&Received, &Sample)> = Vec::new();
    let mut judged: Vec<JudgedReading> = Vec::new();
    let mut samples: Vec<SampleRef> = Vec::new();
    let mut seen: Vec<(&Received, &Sample)> = Vec::new();
    for ((c, own), stored) in candidates
        .into_iter()
        .zip(judged_candidates.iter_mut())
        .zip(refs)
    {
        match stored {
            Some(key) => {
                fresh.push(c);
                samples.extend(std::iter::repeat(key).take(own.len()));
                judged.append(own);
            }
            None => seen.push(c),
        }
    }
    if !seen.is_empty() {
        let stored = stored_hashes(&tx, &seen).await?;
        for (msg, s) in seen {
            match stored.get(&(s.station_id.clone(), s.msg_id.clone())) {
                Some(h) if *h == s.content_sha256 => report.duplicates += 1,
                _ => refusals.push(conflict(msg, s)),
            }
        }
    }

    report.stored = fresh.len();
    report.readings = judged.len();
    for j in &judged {
        *report.levels.entry(j.judgement.level.as_str()).or_default() += 1;
    }
    let archive = archive_entries(&fresh, &judged);
    Ok(Staged {
        tx,
        report,
        refusals,
        fresh,
        judged,
        samples,
        keys,
        archive,
        received: batch.len(),
        started,
    })
}

impl<'a> Staged<'a> {
    /// When the batch's new readings were sampled. The collector asks whether their chunks
    /// exist before copying alongside other batches.
    pub(crate) fn sampled_at(&self) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.fresh.iter().map(|(_, s)| s.sampled_at)
    }

    /// The batch's open transaction.
    pub(crate) fn transaction(&self) -> &Transaction<'a> {
        &self.tx
    }

    /// What the stage found so far: messages new to the store and redelivered copies.
    pub(crate) fn report(&self) -> &BatchReport {
        &self.report
    }

    /// The refusals the batch will quarantine: reason and detail.
    pub(crate) fn refusals(&self) -> impl Iterator<Item = (RejectCode, &str)> + '_ {
        self.refusals.iter().map(|r| (r.code, r.detail.as_str()))
    }
}

/// Phase two of a batch: binary COPY of the readings of its new messages. Their keys are this
/// transaction's alone (see [`stage`]), so batches may copy side by side, except that one
/// creating a hypertable chunk holds a lock other chunk creators wait on until it commits:
/// the collector lets only a batch whose chunks all exist copy before the batches ahead of
/// it have committed (see `store::chunks`).
pub(crate) async fn copy_readings(staged: &Staged<'_>) -> Result<(), StoreError> {
    if staged.judged.is_empty() {
        return Ok(());
    }
    readings::copy_fresh(
        &staged.tx,
        &staged.keys,
        staged.judged.iter().zip(staged.samples.iter().copied()),
    )
    .await?;
    Ok(())
}

/// Phase three of a batch, run only once the previous batch has committed (so incidents see
/// samples in arrival order and the archive chain follows the acks): incident tracks and
/// alert events, quarantine and reject replies, the archive entries, then COMMIT.
pub(crate) async fn finish(
    staged: Staged<'_>,
    ctx: &Context<'_>,
) -> Result<BatchReport, StoreError> {
    let Staged {
        tx,
        mut report,
        refusals,
        judged,
        archive,
        received,
        started,
        ..
    } = staged;
    let applied =
        incidents::apply_incidents(&tx, ctx.mqtt, ctx.clear_after, &judged, ctx.tracks).await?;
    report.alerts = applied.events;
    report.tracks_read = applied.tracks_read;
    report.rejected = quarantine(&tx, ctx, &refusals).await?;
    // Last before COMMIT: the archive head lock is taken after every other row lock.
    let appended = archive::append_batch(&tx, &archive, ctx.archive_head).await?;
    tx.commit().await?;
    if let (Some(cache), Some(kept)) = (ctx.tracks, applied.kept) {
        cache.committed(kept);
    }
    if let Some(head) = ctx.archive_head {
        head.committed(&appended);
    }
    report.messages = received;
    report.took = started.elapsed();
    Ok(report)
}

/// The archive entries of the freshly stored messages: each raw payload and the digest of
/// the readings derived from it, hashed while the batch waits for its turn to finish (only
/// their place in the chain is left for [`finish`]).
fn archive_entries<'a>(
    fresh: &[(&'a Received, &'a Sample)],
    judged: &[JudgedReading],
) -> Vec<NewEntry<'a>> {
    // judge_all leaves each message's readings together, in the order of `fresh`.
    let mut rest = judged;
    let mut entries = Vec::with_capacity(fresh.len());
    for (m, s) in fresh {
        let n = rest
            .iter()
            .take_while(|j| j.source_id == s.station_id && j.msg_id == s.msg_id)
            .count();
        let (own, tail) = rest.split_at(n);
        rest = tail;
        entries.push(NewEntry::new(
            Kind::StationMessage,
            format!("{}/{}", s.station_id, s.msg_id),
            &m.payload,
            archive::digest_of(own),
        ));
    }
    entries
}

fn conflict<'a>(msg: &'a Received, s: &Sample) -> Refusal<'a> {
    Refusal {
        msg,
        code: RejectCode::ConflictingDuplicate,
        detail: format!(
            "msg_id {:?} was already stored with different content; the first is kept",
            s.msg_id
        ),
        msg_id: Some(s.msg_id.clone()),
    }
}

/// The batch's messages to store (parsed, first of their idempotency key in the batch); the
/// rest are refusals, or copies of a message earlier in the batch (the broker may redeliver a
/// message while its first copy is still waiting here), counted as duplicates.
fn sort_out<'a>(
    batch: &'a [Received],
    report: &mut BatchReport,
    refusals: &mut Vec<Refusal<'a>>,
) -> Vec<(&'a Received, &'a Sample)> {
    let mut first: HashMap<(&str, &str), &Sample> = HashMap::new();
    let mut candidates = Vec::new();
    for msg in batch {
        match &msg.parsed {
            Err(r) => refusals.push(Refusal {
                msg,
                code: r.code,
                detail: r.detail.clone(),
                msg_id: r.msg_id.clone(),
            }),
            Ok(s) => match first.get(&(s.station_id.as_str(), s.msg_id.as_str())) {
                Some(prev) if prev.content_sha256 == s.content_sha256 => report.duplicates += 1,
                Some(_) => refusals.push(conflict(msg, s)),
                None => {
                    first.insert((&s.station_id, &s.msg_id), s);
                    candidates.push((msg, s));
                }
            },
        }
    }
    candidates
}

/// Records `list`'s messages as `samples` rows: returns each one's sample, in order, or
/// `None` for a message already stored. By [`copy_samples`]; when the batch holds a stored
/// message (or a key was not found), by [`insert_samples`], which skips stored messages.
async fn record_samples(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    list: &[(&Received, &Sample)],
    keys: &SampleKeys,
) -> Result<Vec<Option<SampleRef>>, StoreError> {
    if let Some(refs) = copy_samples(tx, ctx, list, keys).await? {
        return Ok(refs);
    }
    let mut inserted = insert_samples(tx, ctx, list).await?;
    Ok(list
        .iter()
        .map(|(_, s)| inserted.remove(&(s.station_id.clone(), s.msg_id.clone())))
        .collect())
}

/// The distinct values of `items`, in first-seen order.
fn distinct<'s>(items: impl Iterator<Item = &'s str>) -> Vec<&'s str> {
    let mut seen = HashSet::new();
    items.filter(|i| seen.insert(*i)).collect()
}

/// The fast way to record a batch's new messages: one binary COPY of their `samples` rows,
/// with the keys [`SampleKeys`] found and drew. Returns each message's sample, in the order of
/// `list`, or `None` when the batch needs [`insert_samples`] instead: a station or point key
/// is missing, or a message is already stored (by an earlier batch, or by one still in flight,
/// which the COPY waits for, and [`samples::copy_new`] undoes). Redeliveries are rare (after
/// a reconnect or a crash), so nearly every batch takes this way.
async fn copy_samples(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    list: &[(&Received, &Sample)],
    keys: &SampleKeys,
) -> Result<Option<Vec<Option<SampleRef>>>, StoreError> {
    if list.is_empty() {
        return Ok(Some(Vec::new()));
    }
    if keys.fresh().len() < list.len() {
        return Ok(None);
    }
    let mut refs = Vec::with_capacity(list.len());
    let mut rows = Vec::with_capacity(list.len());
    for ((msg, s), sample_key) in list.iter().zip(keys.fresh()) {
        let (Some(source_key), Some(point_key)) =
            (keys.station(&s.station_id), keys.point(&s.point_id))
        else {
            return Ok(None);
        };
        let sample = SampleRef {
            sample_key: *sample_key,
            point_key,
        };
        refs.push(Some(sample));
        rows.push(NewSample {
            sample,
            source_key,
            sampled_at: s.sampled_at,
            received_at: msg.received_at,
            part: 0,
            msg_id: &s.msg_id,
            ph: stored_ph(ctx, s),
            depth_cm: s.depth_cm,
            method: s.method.as_deref(),
            content_sha256: Some(hex::decode(&s.content_sha256).unwrap_or_default()),
        });
    }
    Ok(samples::copy_new(tx, &rows).await?.then_some(refs))
}

/// The pH stored with a sample: the one it was judged with (the sample's, else its point's).
fn stored_ph(ctx: &Context<'_>, s: &Sample) -> Option<f64> {
    ctx.registry
        .get(&s.point_id)
        .map_or(s.ph, |p| judging_ph(s.ph, p))
}

/// Records each new message as a `samples` row under its idempotency key (station, msg_id)
/// and returns the keys of those stored now; a message already stored (by an earlier batch,
/// or one still in flight, which is waited for) is left out. The stations' `sources` rows
/// exist already ([`SampleKeys::resolve`] created any missing before the transaction).
async fn insert_samples(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    list: &[(&Received, &Sample)],
) -> Result<HashMap<(String, String), SampleRef>, StoreError> {
    if list.is_empty() {
        return Ok(HashMap::new());
    }
    let stations: Vec<&str> = list.iter().map(|(_, s)| s.station_id.as_str()).collect();
    let ids: Vec<&str> = list.iter().map(|(_, s)| s.msg_id.as_str()).collect();
    let hashes: Vec<Vec<u8>> = list
        .iter()
        .map(|(_, s)| hex::decode(&s.content_sha256).unwrap_or_default())
        .collect();
    let points: Vec<&str> = list.iter().map(|(_, s)| s.point_id.as_str()).collect();
    let sampled: Vec<DateTime<Utc>> = list.iter().map(|(_, s)| s.sampled_at).collect();
    let received: Vec<DateTime<Utc>> = list.iter().map(|(m, _)| m.received_at).collect();
    // The pH stored is the one judged with: the sample's, else the point's.
    let phs: Vec<Option<f64>> = list.iter().map(|(_, s)| stored_ph(ctx, s)).collect();
    let tops: Vec<Option<f64>> = list.iter().map(|(_, s)| s.depth_cm.map(|d| d.0)).collect();
    let bottoms: Vec<Option<f64>> = list.iter().map(|(_, s)| s.depth_cm.map(|d| d.1)).collect();
    let methods: Vec<Option<&str>> = list.iter().map(|(_, s)| s.method.as_deref()).collect();
    let samples = tx
        .prepare_cached(
            "WITH stored AS (
                 INSERT INTO samples (sampled_at, received_at, source_key, point_key, part,
                                      msg_id, ph, depth_top_cm, depth_bottom_cm, method,
                                      content_sha256)
                 SELECT k.sampled_at, k.received_at, so.source_key, p.point_key, 0, k.msg_id,
                        k.ph, k.top, k.bottom, k.method, k.sha
                 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[],
                             $5::timestamptz[], $6::timestamptz[], $7::float8[],
                             $8::float8[], $9::float8[], $10::text[]) WITH ORDINALITY
                      AS k(station, msg_id, sha, point_id, sampled_at, received_at, ph, top,
                           bottom, method, i)
                 JOIN sources so ON so.source = 'station' AND so.source_id = k.station
                 JOIN points p ON p.point_id = k.point_id
                 ORDER BY k.i
                 ON CONFLICT (source_key, msg_id, part) DO NOTHING
                 RETURNING source_key, msg_id, sample_key, point_key)
             SELECT so.source_id, stored.msg_id, stored.sample_key, stored.point_key
             FROM stored JOIN sources so ON so.source_key = stored.source_key",
        )
        .await?;
    let sample_params: [&(dyn ToSql + Sync); 10] = [
        &stations, &ids, &hashes, &points, &sampled, &received, &phs, &tops, &bottoms, &methods,
    ];
    let rows = tx.query(&samples, &sample_params).await;
    Ok(rows?
        .iter()
        .map(|r| {
            let key = SampleRef {
                sample_key: r.get(2),
                point_key: r.get(3),
            };
            ((r.get(0), r.get(1)), key)
        })
        .collect())
}

/// The stored content hash (hex) of each of `list`'s messages that is stored.
async fn stored_hashes(
    tx: &Transaction<'_>,
    list: &[(&Received, &Sample)],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let stations: Vec<&str> = list.iter().map(|(_, s)| s.station_id.as_str()).collect();
    let ids: Vec<&str> = list.iter().map(|(_, s)| s.msg_id.as_str()).collect();
    let rows = tx
        .query(
            "SELECT so.source_id, s.msg_id, s.content_sha256
             FROM unnest($1::text[], $2::text[]) AS k(station_id, msg_id)
             JOIN sources so ON so.source = 'station' AND so.source_id = k.station_id
             JOIN samples s ON s.source_key = so.source_key AND s.msg_id = k.msg_id
                           AND s.part = 0",
            &[&stations, &ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let sha: Option<Vec<u8>> = r.get(2);
            ((r.get(0), r.get(1)), hex::encode(sha.unwrap_or_default()))
        })
        .collect())
}

/// The judged readings of each candidate message, in the order of `candidates` (a message
/// whose point left the registry since it was validated has none).
fn judge_candidates(
    ctx: &Context<'_>,
    candidates: &[(&Received, &Sample)],
) -> Vec<Vec<JudgedReading>> {
    candidates
        .iter()
        .map(|(msg, sample)| {
            // The registry snapshot is the one the sample was validated against.
            ctx.registry
                .get(&sample.point_id)
                .map_or_else(Vec::new, |point| {
                    judge_sample(ctx.standards, point, sample, msg.received_at)
                })
        })
        .collect()
}

/// Records refusals (once per distinct raw content and reason) and queues a reply to each
/// newly recorded one on the station's rejects topic. The reply carries the SHA-256 of the
/// raw payload, so a station can match it even when no `msg_id` could be read.
async fn quarantine(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    refusals: &[Refusal<'_>],
) -> Result<BTreeMap<&'static str, usize>, StoreError> {
    let mut counts = BTreeMap::new();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO quarantine (received_at, topic, station_id, msg_id, reason, detail, raw,
                                     raw_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (topic, raw_sha256, reason) DO NOTHING
             RETURNING id",
        )
        .await?;
    for r in refusals {
        let sha = hex::encode(Sha256::digest(&r.msg.payload));
        let new = tx
            .query_opt(
                &stmt,
                &[
                    &r.msg.received_at,
                    &r.msg.topic,
                    &r.msg.station_id,
                    &r.msg_id,
                    &r.code.as_str(),
                    &r.detail,
                    &r.msg.payload,
                    &sha,
                ],
            )
            .await?;
        let Some(row) = new else { continue };
        *counts.entry(r.code.as_str()).or_default() += 1;
        let Some(station) = &r.msg.station_id else {
            continue;
        };
        let quarantine_id: i64 = row.get(0);
        let event_id = Uuid::now_v7();
        let payload = json!({
            "event_id": event_id,
            "msg_id": r.msg_id,
            "payload_sha256": sha,
            "reason": r.code.as_str(),
            "detail": r.detail,
            "received_at": r.msg.received_at,
            "quarantine_id": quarantine_id,
        });
        outbox::insert(
            tx,
            event_id,
            "reject",
            &ctx.mqtt.rejects_topic(station),
            &payload,
        )
        .await?;
    }
    Ok(counts)
}
