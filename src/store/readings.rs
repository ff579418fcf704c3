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

use crate::domain::reading::JudgedReading;

/// Inserts readings with one `unnest` statement; an already-stored reading (same source,
/// source id, msg id, metal and time) is skipped. Returns the number inserted.
pub(crate) async fn insert(
    tx: &Transaction<'_>,
    rows: &[JudgedReading],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
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
    let columns = Columns::of(rows);
    Ok(tx.execute(&stmt, &columns.params()).await?)
}

/// Readings as one array per column, in the order of [`insert`]'s `unnest` (borrowed, never
/// cloned: this runs for every reading of every batch).
struct Columns<'a> {
    sampled: Vec<DateTime<Utc>>,
    points: Vec<&'a str>,
    metals: Vec<&'a str>,
    sources: Vec<&'a str>,
    source_ids: Vec<&'a str>,
    ids: Vec<&'a str>,
    mgkg: Vec<f64>,
    orig: Vec<f64>,
    units: Vec<&'a str>,
    detected: Vec<bool>,
    levels: Vec<&'a str>,
    screening: Vec<Option<f64>>,
    intervention: Vec<Option<f64>>,
    std_ids: Vec<Option<&'a str>>,
    std_versions: Vec<Option<&'a str>>,
    columns: Vec<Option<&'a str>>,
    s_src: Vec<Option<&'a str>>,
    i_src: Vec<Option<&'a str>>,
    land_uses: Vec<&'a str>,
    phs: Vec<Option<f64>>,
    bands: Vec<Option<String>>,
    assumed: Vec<bool>,
    methods: Vec<Option<&'a str>>,
    tops: Vec<Option<f64>>,
    bottoms: Vec<Option<f64>>,
    received: Vec<DateTime<Utc>>,
}

impl<'a> Columns<'a> {
    /// The columns of `rows`.
    fn of(rows: &'a [JudgedReading]) -> Columns<'a> {
        fn t(j: &JudgedReading) -> Option<&Thresholds> {
            j.judgement.thresholds.as_deref()
        }
        Columns {
            sampled: rows.iter().map(|j| j.sampled_at).collect(),
            points: rows.iter().map(|j| j.point_id.as_str()).collect(),
            metals: rows.iter().map(|j| j.metal.symbol()).collect(),
            sources: rows.iter().map(|j| j.source.as_str()).collect(),
            source_ids: rows.iter().map(|j| j.source_id.as_str()).collect(),
            ids: rows.iter().map(|j| j.msg_id.as_str()).collect(),
            mgkg: rows.iter().map(|j| j.value_mgkg).collect(),
            orig: rows.iter().map(|j| j.value_orig).collect(),
            units: rows.iter().map(|j| j.unit_orig.as_str()).collect(),
            detected: rows.iter().map(|j| j.detected).collect(),
            levels: rows.iter().map(|j| j.judgement.level.as_str()).collect(),
            screening: rows.iter().map(|j| t(j).map(|t| t.screening)).collect(),
            intervention: rows
                .iter()
                .map(|j| t(j).and_then(|t| t.intervention))
                .collect(),
            std_ids: rows
                .iter()
                .map(|j| t(j).map(|t| t.standard_id.as_str()))
                .collect(),
            std_versions: rows
                .iter()
                .map(|j| t(j).map(|t| t.standard_version.as_str()))
                .collect(),
            columns: rows
                .iter()
                .map(|j| t(j).map(|t| t.column.as_str()))
                .collect(),
            s_src: rows
                .iter()
                .map(|j| t(j).map(|t| t.screening_source.as_str()))
                .collect(),
            i_src: rows
                .iter()
                .map(|j| t(j).and_then(|t| t.intervention_source.as_deref()))
                .collect(),
            land_uses: rows.iter().map(|j| j.land_use.as_str()).collect(),
            phs: rows.iter().map(|j| j.ph).collect(),
            bands: rows
                .iter()
                .map(|j| t(j).and_then(|t| t.ph_band).map(|b| b.to_string()))
                .collect(),
            assumed: rows
                .iter()
                .map(|j| t(j).is_some_and(|t| t.ph_assumed))
                .collect(),
            methods: rows.iter().map(|j| j.method.as_deref()).collect(),
            tops: rows.iter().map(|j| j.depth_cm.map(|d| d.0)).collect(),
            bottoms: rows.iter().map(|j| j.depth_cm.map(|d| d.1)).collect(),
            received: rows.iter().map(|j| j.received_at).collect(),
        }
    }

    /// The parameters `$1`…`$26` of [`insert`]'s statement.
    fn params(&self) -> [&(dyn ToSql + Sync); 26] {
        [
            &self.sampled,
            &self.points,
            &self.metals,
            &self.sources,
            &self.source_ids,
            &self.ids,
            &self.mgkg,
            &self.orig,
            &self.units,
            &self.detected,
            &self.levels,
            &self.screening,
            &self.intervention,
            &self.std_ids,
            &self.std_versions,
            &self.columns,
            &self.s_src,
            &self.i_src,
            &self.land_uses,
            &self.phs,
            &self.bands,
            &self.assumed,
            &self.methods,
            &self.tops,
            &self.bottoms,
            &self.received,
        ]
    }
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
pub(crate) async fn insert_fresh(
    tx: &Transaction<'_>,
    rows: &[JudgedReading],
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    insert_fresh_from(tx, || rows.iter()).await
}

/// [`insert_fresh`] for readings made one at a time by `readings()` (called again, from the
/// start, for the fallback): a large batch is never held as a list of judged readings.
pub(crate) async fn insert_fresh_from<I, R>(
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
