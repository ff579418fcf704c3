//! Judged readings, whatever their source (station message or lab batch): inserting them
//! (`unnest`, or binary COPY for readings of messages new in this transaction) inside the
//! caller's transaction. Incident tracks are [`super::incidents`], the outbox
//! [`super::outbox`].

use std::borrow::Borrow;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};

use super::StoreError;
use crate::domain::standard::Thresholds;

pub use super::incidents::{apply_incidents, apply_incidents_by, IncidentKey, INCIDENT_LOCK};
pub use crate::domain::reading::{JudgedReading, Source};

/// Inserts readings with one `unnest` statement; an already-stored reading (same source,
/// source id, msg id, metal and time) is skipped. Returns the number inserted.
pub async fn insert(tx: &Transaction<'_>, rows: &[JudgedReading]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    // Borrowed, never cloned: this runs for every reading of every batch.
    fn t(j: &JudgedReading) -> Option<&Thresholds> {
        j.judgement.thresholds.as_deref()
    }
    let sampled: Vec<DateTime<Utc>> = rows.iter().map(|j| j.sampled_at).collect();
    let points: Vec<&str> = rows.iter().map(|j| j.point_id.as_str()).collect();
    let metals: Vec<&str> = rows.iter().map(|j| j.metal.symbol()).collect();
    let sources: Vec<&str> = rows.iter().map(|j| j.source.as_str()).collect();
    let source_ids: Vec<&str> = rows.iter().map(|j| j.source_id.as_str()).collect();
    let ids: Vec<&str> = rows.iter().map(|j| j.msg_id.as_str()).collect();
    let mgkg: Vec<f64> = rows.iter().map(|j| j.value_mgkg).collect();
    let orig: Vec<f64> = rows.iter().map(|j| j.value_orig).collect();
    let units: Vec<&str> = rows.iter().map(|j| j.unit_orig.as_str()).collect();
    let detected: Vec<bool> = rows.iter().map(|j| j.detected).collect();
    let levels: Vec<&str> = rows.iter().map(|j| j.judgement.level.as_str()).collect();
    let screening: Vec<Option<f64>> = rows.iter().map(|j| t(j).map(|t| t.screening)).collect();
    let intervention: Vec<Option<f64>> = rows
        .iter()
        .map(|j| t(j).and_then(|t| t.intervention))
        .collect();
    let std_ids: Vec<Option<&str>> = rows
        .iter()
        .map(|j| t(j).map(|t| t.standard_id.as_str()))
        .collect();
    let std_versions: Vec<Option<&str>> = rows
        .iter()
        .map(|j| t(j).map(|t| t.standard_version.as_str()))
        .collect();
    let columns: Vec<Option<&str>> = rows
        .iter()
        .map(|j| t(j).map(|t| t.column.as_str()))
        .collect();
    let s_src: Vec<Option<&str>> = rows
        .iter()
        .map(|j| t(j).map(|t| t.screening_source.as_str()))
        .collect();
    let i_src: Vec<Option<&str>> = rows
        .iter()
        .map(|j| t(j).and_then(|t| t.intervention_source.as_deref()))
        .collect();
    let land_uses: Vec<&str> = rows.iter().map(|j| j.land_use.as_str()).collect();
    let phs: Vec<Option<f64>> = rows.iter().map(|j| j.ph).collect();
    let bands: Vec<Option<String>> = rows
        .iter()
        .map(|j| t(j).and_then(|t| t.ph_band).map(|b| b.to_string()))
        .collect();
    let assumed: Vec<bool> = rows
        .iter()
        .map(|j| t(j).is_some_and(|t| t.ph_assumed))
        .collect();
    let methods: Vec<Option<&str>> = rows.iter().map(|j| j.method.as_deref()).collect();
    let tops: Vec<Option<f64>> = rows.iter().map(|j| j.depth_cm.map(|d| d.0)).collect();
    let bottoms: Vec<Option<f64>> = rows.iter().map(|j| j.depth_cm.map(|d| d.1)).collect();
    let received: Vec<DateTime<Utc>> = rows.iter().map(|j| j.received_at).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO readings (sampled_at, point_id, metal, source, source_id, msg_id,
                 value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
                 intervention_mgkg, standard_id, standard_version, threshold_column,
                 screening_source, intervention_source, land_use, ph, ph_band, ph_assumed,
                 method, depth_top_cm, depth_bottom_cm, received_at)
             SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[],
                         $5::text[], $6::text[], $7::float8[], $8::float8[], $9::text[],
                         $10::bool[], $11::text[], $12::float8[], $13::float8[], $14::text[],
                         $15::text[], $16::text[], $17::text[], $18::text[], $19::text[],
                         $20::float8[], $21::text[], $22::bool[], $23::text[], $24::float8[],
                         $25::float8[], $26::timestamptz[])
             ON CONFLICT DO NOTHING",
        )
        .await?;
    let n = tx
        .execute(
            &stmt,
            &[
                &sampled,
                &points,
                &metals,
                &sources,
                &source_ids,
                &ids,
                &mgkg,
                &orig,
                &units,
                &detected,
                &levels,
                &screening,
                &intervention,
                &std_ids,
                &std_versions,
                &columns,
                &s_src,
                &i_src,
                &land_uses,
                &phs,
                &bands,
                &assumed,
                &methods,
                &tops,
                &bottoms,
                &received,
            ],
        )
        .await?;
    Ok(n)
}

/// Column types of [`COPY_COLUMNS`], in order.
const COPY_TYPES: [Type; 26] = [
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::FLOAT8,
    Type::TEXT,
    Type::BOOL,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TIMESTAMPTZ,
];

/// The column list of a binary COPY of readings, matching [`COPY_TYPES`].
const COPY_COLUMNS: &str = "(sampled_at, point_id, metal, source, source_id,
     msg_id, value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
     intervention_mgkg, standard_id, standard_version, threshold_column, screening_source,
     intervention_source, land_use, ph, ph_band, ph_assumed, method, depth_top_cm,
     depth_bottom_cm, received_at)";

/// Inserts the readings of messages stored **in this transaction** (their idempotency key
/// was new, so none of their readings can be stored yet) by binary COPY straight into the
/// hypertable: no `ON CONFLICT` arbiter probe per row and no array decoding, the path the
/// bench's COPY limit measures. The unique constraint still guards: should a reading exist
/// after all (say a `messages` row was removed by hand while its readings stayed), the COPY
/// fails with a unique violation inside a savepoint, which is rolled back, and the rows go
/// through [`insert`] (`ON CONFLICT DO NOTHING`) instead: the result is the same either way.
/// Returns the number inserted.
pub async fn insert_fresh(tx: &Transaction<'_>, rows: &[JudgedReading]) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    insert_fresh_from(tx, || rows.iter()).await
}

/// [`insert_fresh`] for readings made one at a time by `readings()` (called again, from the
/// start, for the fallback): a large batch is never held as a list of judged readings.
pub async fn insert_fresh_from<I, R>(
    tx: &Transaction<'_>,
    readings: impl Fn() -> I,
) -> Result<u64, StoreError>
where
    I: Iterator<Item = R>,
    R: Borrow<JudgedReading>,
{
    // The savepoint and the COPY go out together (one round trip fewer); a failed savepoint
    // fails the COPY with it.
    let (savepoint, copied) = tokio::join!(
        tx.batch_execute("SAVEPOINT readings_copy"),
        copy_into(tx.client(), "readings", readings())
    );
    savepoint?;
    match copied {
        Ok(n) => Ok(n),
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT readings_copy")
                .await?;
            let rows: Vec<JudgedReading> = readings().map(|r| r.borrow().clone()).collect();
            tracing::warn!(
                rows = rows.len(),
                "readings already stored for a new message; inserted with ON CONFLICT DO NOTHING"
            );
            insert(tx, &rows).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Binary COPY of judged readings into `table`, a table shaped like `readings` (the hypertable
/// itself, or the bench's copy of it). `table` is a name from code, never from input. Runs
/// inside whatever transaction is open on `client`. Returns the number of rows copied.
pub async fn copy_into<R: Borrow<JudgedReading>>(
    client: &tokio_postgres::Client,
    table: &str,
    rows: impl IntoIterator<Item = R>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in(&format!("COPY {table} {COPY_COLUMNS} FROM STDIN BINARY"))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &COPY_TYPES);
    pin_mut!(writer);
    for j in rows {
        let j = j.borrow();
        let t = j.judgement.thresholds.as_ref();
        let band = t.and_then(|t| t.ph_band).map(|b| b.to_string());
        let screening = t.map(|t| t.screening);
        let intervention = t.and_then(|t| t.intervention);
        let std_id = t.map(|t| t.standard_id.as_str());
        let std_version = t.map(|t| t.standard_version.as_str());
        let column = t.map(|t| t.column.as_str());
        let s_src = t.map(|t| t.screening_source.as_str());
        let i_src = t.and_then(|t| t.intervention_source.as_deref());
        let assumed = t.is_some_and(|t| t.ph_assumed);
        let top = j.depth_cm.map(|d| d.0);
        let bottom = j.depth_cm.map(|d| d.1);
        let row: [&(dyn ToSql + Sync); 26] = [
            &j.sampled_at,
            &j.point_id,
            &j.metal.symbol(),
            &j.source.as_str(),
            &j.source_id,
            &j.msg_id,
            &j.value_mgkg,
            &j.value_orig,
            &j.unit_orig,
            &j.detected,
            &j.judgement.level.as_str(),
            &screening,
            &intervention,
            &std_id,
            &std_version,
            &column,
            &s_src,
            &i_src,
            &j.land_use.as_str(),
            &j.ph,
            &band,
            &assumed,
            &j.method,
            &top,
            &bottom,
            &j.received_at,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await
}
