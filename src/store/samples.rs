//! `samples` rows, whatever their source: a station message is one sample, a lab batch's
//! field sample one per combination of point, time, pH, depth and method (its `part`). Both
//! writers draw the rows' keys first ([`super::keys::SampleKeys`]) and copy the rows by
//! binary COPY: no `ON CONFLICT` arbiter probe per row, no arrays decoded, nothing returned.
//! A COPY that meets a stored sample fails as a whole on the idempotency key
//! `(source_key, msg_id, part)`: [`copy_new`] copies under a savepoint and undoes it, and the
//! caller falls back to its `INSERT … ON CONFLICT DO NOTHING`, which skips stored samples.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use futures_util::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Statement;

use super::readings::SampleRef;
use super::StoreError;

/// One `samples` row to copy.
#[derive(Debug)]
pub(crate) struct NewSample<'a> {
    /// Its drawn key and its point's key.
    pub sample: SampleRef,
    /// `sources.source_key` of its station or lab batch.
    pub source_key: i32,
    /// When it was taken.
    pub sampled_at: DateTime<Utc>,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// 0 for a station message; the part number of a lab sample.
    pub part: i16,
    /// The station's `msg_id` or the lab's sample id.
    pub msg_id: &'a str,
    /// The pH it was judged with.
    pub ph: Option<f64>,
    /// Depth from the surface, top and bottom, cm.
    pub depth_cm: Option<(f64, f64)>,
    /// Analytical method.
    pub method: Option<&'a str>,
    /// SHA-256 of a station message's canonical content (lab samples: none; their batch's
    /// content hash is in `lab_batches`).
    pub content_sha256: Option<Vec<u8>>,
}

/// Column types of [`COPY`], in the order of its column list.
const TYPES: [Type; 12] = [
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TIMESTAMPTZ,
    Type::INT4,
    Type::INT4,
    Type::INT2,
    Type::TEXT,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::TEXT,
    Type::BYTEA,
];

/// The binary COPY of `samples` rows, matching [`TYPES`].
const COPY: &str = "COPY samples (sample_key, sampled_at, received_at, source_key, point_key,
                                  part, msg_id, ph, depth_top_cm, depth_bottom_cm, method,
                                  content_sha256)
                    FROM STDIN BINARY";

/// The savepoint around the COPY, and undoing it.
const BEFORE_COPY: &str = "SAVEPOINT before_samples_copy";
const UNDO_COPY: &str = "ROLLBACK TO SAVEPOINT before_samples_copy";

/// Copies `rows` into `samples` in `tx`, under a savepoint. Returns false, with the COPY
/// undone and the transaction usable, when one of them is stored already (the idempotency
/// key's unique violation): the caller then inserts them its own way, skipping stored ones.
pub(crate) async fn copy_new(
    tx: &Transaction<'_>,
    rows: &[NewSample<'_>],
) -> Result<bool, StoreError> {
    // Prepared once per pooled connection (given as text, the COPY would be prepared afresh
    // each time, one round trip), then the savepoint and the COPY's start leave together, in
    // that order: one round trip where the prepare, the savepoint and the start took three.
    let statement = tx.prepare_cached(COPY).await?;
    let (savepoint, copied) = tokio::join!(
        biased;
        tx.batch_execute(BEFORE_COPY),
        copy(tx.client(), &statement, rows)
    );
    savepoint?;
    match copied {
        Ok(()) => Ok(true),
        Err(StoreError::Db(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute(UNDO_COPY).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The binary COPY of `rows` by `statement` ([`COPY`], prepared) inside the transaction open
/// on `client`.
async fn copy(
    client: &tokio_postgres::Client,
    statement: &Statement,
    rows: &[NewSample<'_>],
) -> Result<(), StoreError> {
    let sink = client.copy_in(statement).await?;
    let writer = BinaryCopyInWriter::new(sink, &TYPES);
    pin_mut!(writer);
    for s in rows {
        let (top, bottom) = (s.depth_cm.map(|d| d.0), s.depth_cm.map(|d| d.1));
        let row: [&(dyn ToSql + Sync); 12] = [
            &s.sample.sample_key,
            &s.sampled_at,
            &s.received_at,
            &s.source_key,
            &s.sample.point_key,
            &s.part,
            &s.msg_id,
            &s.ph,
            &top,
            &bottom,
            &s.method,
            &s.content_sha256,
        ];
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}
