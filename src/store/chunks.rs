//! Which time ranges of the `readings` hypertable already have a chunk.
//!
//! TimescaleDB creates a chunk inside the transaction whose insert needs it, and that
//! transaction holds a lock on the hypertable until it ends: any other transaction that needs
//! a new chunk waits for it. The collector copies a batch's readings while the batches ahead
//! of it are still open only when every reading falls in a chunk that already exists, so no
//! chunk lock is involved and a batch can never wait on one behind it; a batch that may create
//! a chunk copies only after every batch ahead of it has committed.
//!
//! `KnownChunks` (crate-internal) answers "do they all exist" from memory. When it says no,
//! the caller `refresh`es it from the catalog and asks again. Chunks are only ever added by
//! soilmon; should an operator drop one while the service runs, a batch may create it again
//! alongside others and, at worst, wait out the writer's lock timeout and fail. The
//! collector then `forget`s what it knew, so the retry reads the catalog again and copies in
//! turn.

use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::StoreError;

/// The time ranges `[start, end)` of the existing chunks of `readings`, in microseconds since
/// the epoch, sorted by start.
#[derive(Debug, Default)]
pub(crate) struct KnownChunks {
    ranges: RwLock<Vec<(i64, i64)>>,
}

impl KnownChunks {
    /// True when a known chunk holds every one of `times` (and when there are none).
    pub(crate) fn cover(&self, times: impl IntoIterator<Item = DateTime<Utc>>) -> bool {
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        times
            .into_iter()
            .all(|t| covered(&ranges, t.timestamp_micros()))
    }

    /// Forgets every known range: the next [`cover`](Self::cover) of any time says no, and
    /// the caller reloads them. Called when a batch failed, in case a chunk it was told
    /// exists had been dropped.
    pub(crate) fn forget(&self) {
        self.ranges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Reloads the ranges from the catalog, inside `tx` under a savepoint: a failure leaves
    /// the transaction usable and the known ranges as they were.
    pub(crate) async fn refresh(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        tx.batch_execute("SAVEPOINT known_chunks").await?;
        let rows = tx
            .query(
                "SELECT range_start, range_end FROM timescaledb_information.chunks
                 WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'
                   AND range_start IS NOT NULL AND range_end IS NOT NULL
                 ORDER BY range_start",
                &[],
            )
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT known_chunks")
                    .await?;
                return Err(e.into());
            }
        };
        tx.batch_execute("RELEASE SAVEPOINT known_chunks").await?;
        let fresh: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| {
                let (start, end): (DateTime<Utc>, DateTime<Utc>) = (r.get(0), r.get(1));
                (start.timestamp_micros(), end.timestamp_micros())
            })
            .collect();
        *self.ranges.write().unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// Whether `t` lies in one of `ranges` (sorted by start, not overlapping).
fn covered(ranges: &[(i64, i64)], t: i64) -> bool {
    // The last range starting at or before `t` is the only one that can hold it.
    let after = ranges.partition_point(|(start, _)| *start <= t);
    after > 0 && t < ranges[after - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_is_covered_only_inside_a_range() {
        let ranges = [(0, 10), (10, 20), (40, 50)];
        for (t, inside) in [
            (-1, false),
            (0, true),
            (9, true),
            (10, true),
            (19, true),
            (20, false),
            (39, false),
            (40, true),
            (49, true),
            (50, false),
        ] {
            assert_eq!(covered(&ranges, t), inside, "{t}");
        }
        assert!(!covered(&[], 5));
    }

    #[test]
    fn cover_needs_every_time_in_a_known_chunk() {
        let known = KnownChunks::default();
        let at = |s| DateTime::from_timestamp(s, 0).unwrap_or_default();
        assert!(known.cover([]));
        assert!(!known.cover([at(5)]));
        if let Ok(mut r) = known.ranges.write() {
            *r = vec![(0, 10_000_000), (20_000_000, 30_000_000)];
        }
        assert!(known.cover([at(5), at(25)]));
        assert!(!known.cover([at(5), at(15)]));
        known.forget();
        assert!(!known.cover([at(5)]));
        assert!(known.cover([]));
    }
}
