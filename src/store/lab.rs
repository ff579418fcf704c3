//! Lab batches in the database: idempotency by batch id and content hash, checks against
//! stored data, and the accepted batch written in one transaction — every row (QC included)
//! by binary COPY into `lab_rows`, the soil field samples as `samples` rows and their
//! readings judged and inserted into `readings`, incidents and alerts through the same path
//! as MQTT, crop samples judged into `crop_results` ([`super::crops`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Transaction};
use futures_util::pin_mut;
use serde_json::Value;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{Json, ToSql, Type};

use super::archive;
use super::incidents::{self, IncidentKey};
use super::keys::SampleKeys;
use super::readings::{self, SampleRef};
use super::samples::{self, NewSample};
use super::StoreError;
use crate::domain::judge::{judge_at_point, judging_ph, Level};
use crate::domain::point::Point;
use crate::domain::reading::{JudgedReading, Measured, Origin, Source};
use crate::lab::{CheckCode, Checked, Issue, LabRow, QcType, Report};
use crate::telemetry;

/// The store context a lab batch is written with (the same as a station batch's).
pub use super::Context as LabContext;

/// What became of an upload.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Stored now (201), with its report.
    Accepted(Report),
    /// The same content was accepted before under this id: its original report as stored
    /// (200).
    Replayed(Value),
    /// This id was accepted with different content (409); the stored content hash.
    Conflict(String),
    /// Refused (422), with every issue.
    Rejected(Report),
}

/// Status and report of a stored batch.
pub async fn get(client: &Client, batch_id: &str) -> Result<Option<(String, Value)>, StoreError> {
    let row = client
        .query_opt(
            "SELECT status, report FROM lab_batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Who uploaded a batch and when: the columns of its `lab_batches` row besides the content.
struct Upload<'a> {
    batch_id: &'a str,
    lab_id: &'a str,
    uploaded_by: &'a str,
    received_at: DateTime<Utc>,
}

/// Decides and stores one checked batch in one transaction.
pub async fn submit(
    client: &mut Client,
    ctx: &LabContext<'_>,
    mut checked: Checked,
    raw: &[u8],
    received_at: DateTime<Utc>,
    uploaded_by: &str,
) -> Result<Outcome, StoreError> {
    let Some(batch_id) = checked.batch_id.clone() else {
        return Ok(Outcome::Rejected(Report::of(&checked, received_at)));
    };
    let lab_id = checked.lab_id.clone().unwrap_or_default();
    let upload = Upload {
        batch_id: &batch_id,
        lab_id: &lab_id,
        uploaded_by,
        received_at,
    };
    let tx = client.transaction().await?;
    if let Some(earlier) = earlier_acceptance(&tx, &batch_id, &checked.content_sha256).await? {
        tx.commit().await?;
        return Ok(earlier);
    }
    let stored = stored_conflicts(&tx, &batch_id, &checked.rows).await?;
    checked.issues.extend(stored);
    if !checked.issues.is_empty() {
        let report = Report::of(&checked, received_at);
        upsert_batch(&tx, &upload, "rejected", &checked, &Json(&report)).await?;
        tx.commit().await?;
        return Ok(Outcome::Rejected(report));
    }
    let report = store_accepted(tx, ctx, checked, raw, &upload).await?;
    let field_samples = report.by_judgement.values().sum();
    if field_samples >= ANALYZE_AFTER_SAMPLES {
        analyze_samples(client, field_samples).await;
    }
    Ok(Outcome::Accepted(report))
}

/// Field samples in one accepted batch from which on `samples`' planner statistics are
/// taken again right after its COMMIT (see [`analyze_samples`]).
const ANALYZE_AFTER_SAMPLES: usize = 1_000;

/// Takes the planner statistics of `samples` again after a large batch, before the upload is
/// answered, instead of leaving it to autovacuum's next pass. The soil tier view finds lab
/// results through the partial index of lab samples (schema 28); planned with statistics
/// taken before a 100,000-row batch (80,000 new lab samples), it took 3.4-3.8 s a query and
/// the snapshot's refresh 3.5 s, and 0.15 s after `ANALYZE samples`, which itself took 0.11 s
/// (`deploy/bench/tier-view.sh` with autovacuum off; docs/performance.md, 2026-12-07, tenth
/// session). The batch is committed either way: a failure is only logged (a login role that
/// does not own the table gets a warning from the server and no new statistics).
async fn analyze_samples(client: &Client, field_samples: usize) {
    let started = std::time::Instant::now();
    let result = client.batch_execute("ANALYZE samples").await;
    telemetry::lab_samples_analysed(field_samples, started.elapsed(), result.err().as_ref());
}

/// Takes the batch id's advisory lock (held to COMMIT) and looks for an earlier acceptance
/// under the id: a replay with its stored report when the content is the same, a conflict
/// otherwise. `None` when the batch is new (or was only rejected before).
async fn earlier_acceptance(
    tx: &Transaction<'_>,
    batch_id: &str,
    content_sha256: &str,
) -> Result<Option<Outcome>, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('lab_batch:' || $1))",
        &[&batch_id],
    )
    .await?;
    let existing = tx
        .query_opt(
            "SELECT status, content_sha256, report FROM lab_batches WHERE batch_id = $1",
            &[&batch_id],
        )
        .await?;
    let Some(row) = existing else {
        return Ok(None);
    };
    let status: String = row.get(0);
    let sha: String = row.get(1);
    if status != "accepted" {
        return Ok(None);
    }
    Ok(Some(if sha == content_sha256 {
        Outcome::Replayed(row.get(2))
    } else {
        Outcome::Conflict(sha)
    }))
}

/// Stores a batch that passed every check and commits: the batch record, every row, the
/// field samples' readings, incidents and alerts, the report, and the archive entry.
async fn store_accepted(
    tx: Transaction<'_>,
    ctx: &LabContext<'_>,
    mut checked: Checked,
    raw: &[u8],
    upload: &Upload<'_>,
) -> Result<Report, StoreError> {
    // Field samples are judged one at a time whenever a step needs their readings (the lab
    // rows' levels, the readings COPY, an alert, the archive digest): the same values each
    // time, and a large batch is never held as a list of judged readings.
    let samples = judgeable_samples(ctx, &checked.rows);
    let mut report = Report::of(&checked, upload.received_at);
    let mut levels: Vec<Option<Level>> = vec![None; checked.rows.len()];
    for s in &samples {
        *report
            .by_judgement
            .entry(Cow::Borrowed(s.level.as_str()))
            .or_default() += 1;
        levels[s.index] = Some(s.level);
    }
    upsert_batch(&tx, upload, "accepted", &checked, &Value::Null).await?;
    let t0 = std::time::Instant::now();
    copy_rows(&tx, upload.batch_id, &checked.rows, &levels).await?;
    drop(levels);
    let t1 = std::time::Instant::now();
    let mut samples_took = std::time::Duration::ZERO;
    // A batch is stored once (advisory lock, status check): its samples and readings are
    // new. Binary COPY.
    if !samples.is_empty() {
        let refs = store_samples(&tx, upload, &samples).await?;
        samples_took = t1.elapsed();
        let received_at = upload.received_at;
        readings::insert_fresh_from(&tx, || with_samples(ctx, &samples, &refs, received_at))
            .await?;
        let skipped = refs.iter().filter(|r| r.is_none()).count();
        if skipped > 0 {
            tracing::warn!(
                batch_id = upload.batch_id,
                readings = skipped,
                "readings already stored for a new message (their samples exist); not copied again"
            );
        }
    }
    if let Some(crops) = ctx.crops {
        super::crops::insert(&tx, crops, &checked.rows, upload.received_at).await?;
    }
    let t2 = std::time::Instant::now();
    report.alerts = apply_incidents(&tx, ctx, &samples, upload.received_at).await?;
    let t3 = std::time::Instant::now();
    tx.execute(
        "UPDATE lab_batches SET report = $2 WHERE batch_id = $1",
        &[&upload.batch_id, &Json(&report)],
    )
    .await?;
    let digest = readings_digest(ctx, &samples, upload.received_at);
    let readings_stored = samples.len();
    drop(samples);
    // The rows are stored: free them before the raw file is encoded into the archive insert
    // (the peak of the upload's memory otherwise).
    checked.rows = Vec::new();
    let t4 = std::time::Instant::now();
    // Last before COMMIT (the archive head lock comes after every other lock).
    archive::append(&tx, archive::Kind::LabBatch, upload.batch_id, raw, &digest).await?;
    let t5 = std::time::Instant::now();
    tx.commit().await?;
    telemetry::lab_batch_stored(&telemetry::LabBatchStored {
        batch_id: upload.batch_id,
        rows: checked.row_count,
        readings: readings_stored,
        copy: t1 - t0,
        readings_insert: t2 - t1,
        samples: samples_took,
        incidents: t3 - t2,
        digest: t4 - t3,
        archive: t5 - t4,
        commit: t5.elapsed(),
    });
    Ok(report)
}

/// What a lab sample's `samples` row holds besides its batch. A sample whose rows differ in
/// point, time, pH, depth or method (one method per metal is common) has one row per
/// combination, numbered by `part`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Part<'a> {
    msg_id: &'a str,
    point_id: &'a str,
    sampled_at: DateTime<Utc>,
    /// The pH judged with (the sample's, else the point's), by its bits.
    ph: Option<u64>,
    depth_cm: Option<(u64, u64)>,
    method: Option<&'a str>,
}

impl<'a> Part<'a> {
    fn of(s: &Sample<'a>) -> Part<'a> {
        Part {
            msg_id: &s.row.sample_id,
            point_id: &s.point.id,
            sampled_at: s.sampled_at,
            ph: judging_ph(s.row.ph, s.point).map(f64::to_bits),
            depth_cm: s.row.depth_cm.map(|(t, b)| (t.to_bits(), b.to_bits())),
            method: s.row.method.as_deref(),
        }
    }
}

/// Stores the batch's `sources` row and one `samples` row per [`Part`] of its field samples;
/// returns the sample of each of `samples`, in order. A batch is stored once (advisory lock,
/// status check), so its samples are new and are copied ([`samples::copy_new`], with keys
/// drawn beforehand). Should one be stored after all (say the batch was marked rejected by
/// hand after it was accepted), the COPY is undone to a savepoint and the parts are inserted
/// instead, skipping the stored ones; their readings, stored with them, are not copied again
/// (`None`): nothing is stored twice.
async fn store_samples(
    tx: &Transaction<'_>,
    upload: &Upload<'_>,
    samples: &[Sample<'_>],
) -> Result<Vec<Option<SampleRef>>, StoreError> {
    let mut index: HashMap<Part<'_>, usize> = HashMap::new();
    let mut parts: Vec<(Part<'_>, i16)> = Vec::new();
    let mut next: HashMap<&str, i16> = HashMap::new();
    let of: Vec<usize> = samples
        .iter()
        .map(|s| {
            let p = Part::of(s);
            *index.entry(p).or_insert_with(|| {
                let n = next.entry(p.msg_id).or_insert(0);
                parts.push((p, *n));
                *n += 1;
                parts.len() - 1
            })
        })
        .collect();
    tx.execute(
        "INSERT INTO sources (source, source_id) SELECT 'lab', $1::text
         WHERE NOT EXISTS (SELECT 1 FROM sources WHERE source = 'lab' AND source_id = $1)
         ON CONFLICT DO NOTHING",
        &[&upload.batch_id],
    )
    .await?;
    let stored = match copy_parts(tx, upload, &parts).await? {
        Some(refs) => refs.into_iter().map(Some).collect(),
        None => insert_parts(tx, upload, &parts).await?,
    };
    Ok(of.iter().map(|&i| stored[i]).collect())
}

/// The way nearly every batch takes: keys drawn for every part, then one binary COPY. Returns
/// the sample of each part, or `None` when the batch needs [`insert_parts`] instead (a
/// point's key was not found, or a part is stored already).
async fn copy_parts(
    tx: &Transaction<'_>,
    upload: &Upload<'_>,
    parts: &[(Part<'_>, i16)],
) -> Result<Option<Vec<SampleRef>>, StoreError> {
    let points: Vec<&str> = parts.iter().map(|(p, _)| p.point_id).collect();
    let batch: [&(dyn ToSql + Sync); 1] = [&upload.batch_id];
    let (source, keys) = tokio::join!(
        tx.query_one(
            "SELECT source_key FROM sources WHERE source = 'lab' AND source_id = $1",
            &batch,
        ),
        SampleKeys::resolve(tx, &[], &points, parts.len())
    );
    let source_key: i32 = source?.get(0);
    let keys = keys?;
    let mut refs = Vec::with_capacity(parts.len());
    for ((p, _), sample_key) in parts.iter().zip(keys.fresh()) {
        let Some(point_key) = keys.point(p.point_id) else {
            return Ok(None);
        };
        refs.push(SampleRef {
            sample_key: *sample_key,
            point_key,
        });
    }
    let rows: Vec<NewSample<'_>> = parts
        .iter()
        .zip(&refs)
        .map(|((p, n), r)| NewSample {
            sample: *r,
            source_key,
            sampled_at: p.sampled_at,
            received_at: upload.received_at,
            part: *n,
            msg_id: p.msg_id,
            ph: p.ph.map(f64::from_bits),
            depth_cm: p
                .depth_cm
                .map(|(t, b)| (f64::from_bits(t), f64::from_bits(b))),
            method: p.method,
            content_sha256: None,
        })
        .collect();
    Ok(samples::copy_new(tx, &rows).await?.then_some(refs))
}

/// Inserts the parts not stored yet and returns the sample of each part (`None`: stored
/// before, left as it is).
async fn insert_parts(
    tx: &Transaction<'_>,
    upload: &Upload<'_>,
    parts: &[(Part<'_>, i16)],
) -> Result<Vec<Option<SampleRef>>, StoreError> {
    let ids: Vec<&str> = parts.iter().map(|(p, _)| p.msg_id).collect();
    let points: Vec<&str> = parts.iter().map(|(p, _)| p.point_id).collect();
    let sampled: Vec<DateTime<Utc>> = parts.iter().map(|(p, _)| p.sampled_at).collect();
    let numbers: Vec<i16> = parts.iter().map(|(_, n)| *n).collect();
    let phs: Vec<Option<f64>> = parts
        .iter()
        .map(|(p, _)| p.ph.map(f64::from_bits))
        .collect();
    let tops: Vec<Option<f64>> = parts
        .iter()
        .map(|(p, _)| p.depth_cm.map(|d| f64::from_bits(d.0)))
        .collect();
    let bottoms: Vec<Option<f64>> = parts
        .iter()
        .map(|(p, _)| p.depth_cm.map(|d| f64::from_bits(d.1)))
        .collect();
    let methods: Vec<Option<&str>> = parts.iter().map(|(p, _)| p.method).collect();
    let rows = tx
        .query(
            "INSERT INTO samples (sampled_at, received_at, source_key, point_key, part, msg_id,
                                  ph, depth_top_cm, depth_bottom_cm, method)
             SELECT k.sampled_at, $1, so.source_key, p.point_key, k.part, k.msg_id, k.ph,
                    k.top, k.bottom, k.method
             FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::int2[], $7::float8[],
                         $8::float8[], $9::float8[], $10::text[]) WITH ORDINALITY
                  AS k(msg_id, point_id, sampled_at, part, ph, top, bottom, method, i)
             JOIN sources so ON so.source = 'lab' AND so.source_id = $2
             JOIN points p ON p.point_id = k.point_id
             ORDER BY k.i
             ON CONFLICT (source_key, msg_id, part) DO NOTHING
             RETURNING msg_id, part, sample_key, point_key",
            &[
                &upload.received_at,
                &upload.batch_id,
                &ids,
                &points,
                &sampled,
                &numbers,
                &phs,
                &tops,
                &bottoms,
                &methods,
            ],
        )
        .await?;
    let stored: HashMap<(String, i16), SampleRef> = rows
        .iter()
        .map(|r| {
            let key = SampleRef {
                sample_key: r.get(2),
                point_key: r.get(3),
            };
            ((r.get(0), r.get(1)), key)
        })
        .collect();
    Ok(parts
        .iter()
        .map(|(p, n)| stored.get(&(p.msg_id.to_string(), *n)).copied())
        .collect())
}

/// The judged reading of each field sample whose sample was stored now, with its sample.
fn with_samples<'s>(
    ctx: &'s LabContext<'_>,
    samples: &'s [Sample<'_>],
    refs: &'s [Option<SampleRef>],
    received_at: DateTime<Utc>,
) -> impl Iterator<Item = (JudgedReading, SampleRef)> + 's {
    samples
        .iter()
        .zip(refs.iter().copied())
        .filter_map(move |(s, r)| r.map(|r| (judged_reading(ctx, s, received_at), r)))
}

/// The field samples' incidents (the same path as MQTT); returns the alerts queued.
async fn apply_incidents(
    tx: &Transaction<'_>,
    ctx: &LabContext<'_>,
    samples: &[Sample<'_>],
    received_at: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let keys: Vec<IncidentKey<'_>> = samples
        .iter()
        .map(|s| IncidentKey {
            point_id: &s.point.id,
            metal: s.row.metal,
            sampled_at: s.sampled_at,
            level: s.level,
        })
        .collect();
    // No track cache: a lab upload is rare, and the station writer's cache sees (by the
    // epoch drawn here) that it must read the tracks again.
    let applied = incidents::apply_incidents_by(
        tx,
        ctx.mqtt,
        ctx.clear_after,
        &keys,
        |i| Cow::Owned(judged_reading(ctx, &samples[i], received_at)),
        None,
    )
    .await?;
    Ok(applied.events)
}

/// The archive digest of exactly the readings stored, in the digest's order.
fn readings_digest(
    ctx: &LabContext<'_>,
    samples: &[Sample<'_>],
    received_at: DateTime<Utc>,
) -> String {
    let mut order: Vec<&Sample<'_>> = samples.iter().collect();
    order.sort_by(|a, b| {
        (
            &*a.row.sample_id,
            a.row.metal.symbol(),
            a.sampled_at.timestamp_micros(),
        )
            .cmp(&(
                &*b.row.sample_id,
                b.row.metal.symbol(),
                b.sampled_at.timestamp_micros(),
            ))
    });
    archive::readings_digest_in_order(
        order
            .iter()
            .map(|s| archive::DigestRow::of(&judged_reading(ctx, s, received_at))),
    )
}

/// Inserts or replaces the batch's `lab_batches` row (a batch rejected before may be sent
/// again).
async fn upsert_batch(
    tx: &Transaction<'_>,
    upload: &Upload<'_>,
    status: &str,
    checked: &Checked,
    report: &(dyn ToSql + Sync),
) -> Result<(), StoreError> {
    let rows = i32::try_from(checked.row_count).unwrap_or(i32::MAX);
    tx.execute(
        "INSERT INTO lab_batches (batch_id, lab_id, status, content_sha256, row_count, report,
                                  uploaded_by, received_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (batch_id) DO UPDATE SET lab_id = EXCLUDED.lab_id,
             status = EXCLUDED.status, content_sha256 = EXCLUDED.content_sha256,
             row_count = EXCLUDED.row_count, report = EXCLUDED.report,
             uploaded_by = EXCLUDED.uploaded_by, received_at = EXCLUDED.received_at,
             stored_at = now()",
        &[
            &upload.batch_id,
            &upload.lab_id,
            &status,
            &checked.content_sha256,
            &rows,
            report,
            &upload.uploaded_by,
            &upload.received_at,
        ],
    )
    .await?;
    Ok(())
}

/// Rows whose (sample, metal) is already stored from another batch.
async fn stored_conflicts(
    tx: &Transaction<'_>,
    batch_id: &str,
    rows: &[LabRow],
) -> Result<Vec<Issue>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = rows.iter().map(|r| &*r.sample_id).collect();
    let metals: Vec<&str> = rows.iter().map(|r| r.metal.symbol()).collect();
    let found = tx
        .query(
            "SELECT l.sample_id, l.metal, l.value_mgkg, l.batch_id
             FROM lab_rows l
             JOIN unnest($1::text[], $2::text[]) AS k(sample_id, metal)
               ON l.sample_id = k.sample_id AND l.metal = k.metal
             WHERE l.batch_id <> $3",
            &[&ids, &metals, &batch_id],
        )
        .await?;
    let stored: HashMap<(String, String), (f64, String)> = found
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    let mut issues = Vec::new();
    if stored.is_empty() {
        return Ok(issues);
    }
    for r in rows {
        let key = (r.sample_id.to_string(), r.metal.symbol().to_string());
        let Some((value, other)) = stored.get(&key) else {
            continue;
        };
        let same = (value - r.value_mgkg).abs() <= 1e-9 * value.abs().max(1.0);
        let (code, what) = if same {
            (CheckCode::AlreadyStored, "is already stored")
        } else {
            (
                CheckCode::ConflictsWithStored,
                "is stored with a different value",
            )
        };
        issues.push(Issue::row(
            code,
            r.line,
            "value",
            format!(
                "sample {:?} {} {what} ({value} mg/kg) from batch {other:?}",
                r.sample_id, r.metal
            ),
        ));
    }
    Ok(issues)
}

/// A field sample of the batch that is judged and stored as a reading.
struct Sample<'a> {
    /// Position in the batch's rows.
    index: usize,
    row: &'a LabRow,
    point: &'a Point,
    sampled_at: DateTime<Utc>,
    level: Level,
}

/// The field samples to judge (QC rows are never judged), with their judgement level.
fn judgeable_samples<'a>(ctx: &LabContext<'a>, rows: &'a [LabRow]) -> Vec<Sample<'a>> {
    let mut out = Vec::new();
    for (index, r) in rows.iter().enumerate() {
        // Crop samples are judged against food limits (store::crops), never as soil.
        if r.qc_type != QcType::Sample || r.matrix.is_some() {
            continue;
        }
        // Both were checked present and registered.
        let (Some(point), Some(sampled_at)) = (
            r.point_id.as_deref().and_then(|p| ctx.registry.get(p)),
            r.sampled_at,
        ) else {
            continue;
        };
        let m = measured(r);
        let level = judge_at_point(
            ctx.standards,
            point,
            r.ph,
            m.metal,
            m.value_mgkg,
            m.detected,
        )
        .level;
        out.push(Sample {
            index,
            row: r,
            point,
            sampled_at,
            level,
        });
    }
    out
}

/// The judged reading of a field sample (the same constructor as a station sample's).
fn judged_reading(
    ctx: &LabContext<'_>,
    s: &Sample<'_>,
    received_at: DateTime<Utc>,
) -> JudgedReading {
    let r = s.row;
    let origin = Origin {
        source: Source::Lab,
        source_id: &r.batch_id,
        msg_id: &r.sample_id,
        sampled_at: s.sampled_at,
        received_at,
        ph: r.ph,
        method: r.method.as_deref(),
        depth_cm: r.depth_cm,
    };
    JudgedReading::at_point(ctx.standards, s.point, &origin, &measured(r))
}

/// The value of a lab row that is judged and stored.
fn measured(r: &LabRow) -> Measured<'_> {
    Measured {
        metal: r.metal,
        value_mgkg: r.judged_value_mgkg(),
        value_orig: r.value_orig,
        unit_orig: &r.unit_orig,
        detected: r.detected,
    }
}

/// Every row of the batch into `lab_rows`. The batch is stored once (advisory lock, status
/// check, and a rejected batch stores no rows), so none of its rows can be stored yet: binary
/// COPY straight into `lab_rows`, as [`readings::insert_fresh`] does for readings. The primary
/// key still guards: should a row exist after all, the COPY's unique violation is rolled back
/// to a savepoint and the rows go through the staging table and `INSERT … ON CONFLICT DO
/// NOTHING` instead (the result is the same either way). Returns the number of rows copied.
async fn copy_rows(
    tx: &Transaction<'_>,
    batch_id: &str,
    rows: &[LabRow],
    levels: &[Option<Level>],
) -> Result<u64, StoreError> {
    tx.batch_execute("SAVEPOINT lab_rows_copy").await?;
    match copy_rows_into(tx.client(), "lab_rows", batch_id, rows, levels).await {
        Ok(n) => Ok(n),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT lab_rows_copy")
                .await?;
            telemetry::lab_rows_already_stored(batch_id, rows.len());
            tx.batch_execute(
                "CREATE TEMP TABLE lab_rows_stage (LIKE lab_rows INCLUDING DEFAULTS) ON COMMIT DROP",
            )
            .await?;
            copy_rows_into(tx.client(), "lab_rows_stage", batch_id, rows, levels).await?;
            let n = tx
                .execute(
                    "INSERT INTO lab_rows SELECT * FROM lab_rows_stage ON CONFLICT DO NOTHING",
                    &[],
                )
                .await?;
            Ok(n)
        }
        Err(e) => Err(e.into()),
    }
}

/// Binary COPY of every row into `table` (`lab_rows` or its staging copy; a name from code,
/// never from input). Returns the number of rows copied.
async fn copy_rows_into(
    client: &tokio_postgres::Client,
    table: &str,
    batch_id: &str,
    rows: &[LabRow],
    levels: &[Option<Level>],
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in(&format!(
            "COPY {table} (batch_id, line, sample_id, point_id, sampled_at, analysed_at,
                 depth_top_cm, depth_bottom_cm, ph, metal, value_orig, unit_orig, value_mgkg,
                 detected, mdl_mgkg, method, qc_type, qc_ref, level) FROM STDIN BINARY"
        ))
        .await?;
    let types = [
        Type::TEXT,
        Type::INT4,
        Type::TEXT,
        Type::TEXT,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::TEXT,
        Type::FLOAT8,
        Type::TEXT,
        Type::FLOAT8,
        Type::BOOL,
        Type::FLOAT8,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
    ];
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (i, r) in rows.iter().enumerate() {
        let line = i32::try_from(r.line).unwrap_or(i32::MAX);
        let point_id = r.point_id.as_deref();
        let unit = &*r.unit_orig;
        let method = r.method.as_deref();
        let level = levels
            .get(i)
            .copied()
            .flatten()
            .filter(|_| r.qc_type == QcType::Sample)
            .map(Level::as_str);
        let values: [&(dyn ToSql + Sync); 19] = [
            &batch_id,
            &line,
            &r.sample_id,
            &point_id,
            &r.sampled_at,
            &r.analysed_at,
            &r.depth_cm.map(|d| d.0),
            &r.depth_cm.map(|d| d.1),
            &r.ph,
            &r.metal.symbol(),
            &r.value_orig,
            &unit,
            &r.value_mgkg,
            &r.detected,
            &r.mdl_mgkg,
            &method,
            &r.qc_type.as_str(),
            &r.qc_ref,
            &level,
        ];
        writer.as_mut().write(&values).await?;
    }
    writer.finish().await
}

/// Counts of stored lab rows per QC type for a batch (for reports and tests).
pub async fn row_counts(
    client: &Client,
    batch_id: &str,
) -> Result<BTreeMap<String, i64>, StoreError> {
    let rows = client
        .query(
            "SELECT qc_type, count(*) FROM lab_rows WHERE batch_id = $1 GROUP BY qc_type",
            &[&batch_id],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
