//! The station writer's memory of the incident tracks it committed, so that a batch reads
//! from the database only the (point, metal) pairs it has not seen before.
//!
//! Reading a batch's tracks cost two statements per batch under the incident lock: the open
//! tracks of its points and, for each pair with an exceedance, the newest earlier sample time
//! from `readings` (one index probe per chunk and pair). Both sit in the serial part of a
//! batch (see `store::writer::finish`), where every millisecond delays every batch behind it.
//!
//! The cache is only ever an answer about committed state. Every writer of the tracks draws
//! the next value of the `incident_epoch` sequence under the incident lock (schema 26). The
//! cache remembers the value its last committed batch drew; when the next batch draws exactly
//! the value after it, no other transaction has held the lock in between, so what the cache
//! holds is what the database holds. Any other value (a lab upload, a quarantine replay,
//! another instance, a batch of ours that rolled back or whose COMMIT timed out: each used up
//! a value) and the cache forgets everything. It changes only in [`TrackCache::committed`],
//! called after a COMMIT that succeeded.
//!
//! A pair is kept in one of two ways: with its track (the newest sample time applied and its
//! open incident, if any), or as idle: no open incident, and its newest sample time not known
//! (a pair whose samples never needed it: none exceeded). An idle pair that exceeds still
//! has its newest earlier sample time read from `readings`, but never its open track.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::IncidentKey;
use crate::domain::incident::Track;
use crate::domain::metal::Metal;

/// How many (point, metal) pairs the cache keeps at most; past it, it starts over empty
/// (the next batches read their pairs from the database again). 200,000 pairs, about 25,000
/// points with all eight metals, take some 20 MB.
const MAX_PAIRS: usize = 200_000;

/// The tracks the writer committed last, under the epoch its last batch drew.
#[derive(Debug, Default)]
pub struct TrackCache {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    /// The epoch the last committed batch drew; `None` before the first.
    epoch: Option<i64>,
    /// Per point, its kept pairs: a track, or `None` for an idle pair.
    points: HashMap<Box<str>, Vec<(Metal, Option<Track>)>>,
    /// Pairs kept, over all points.
    pairs: usize,
}

impl Kept {
    fn clear(&mut self) {
        self.points.clear();
        self.pairs = 0;
    }
}

/// A batch's tracks, to be kept once its transaction has committed; the point ids are the
/// batch's own (copied only for a point the cache does not hold yet).
#[derive(Debug)]
pub(crate) struct KeptTracks<'k> {
    epoch: i64,
    tracks: Vec<(&'k str, Metal, Option<Track>)>,
}

impl<'k> KeptTracks<'k> {
    /// The state a batch that drew `epoch` left its `keys`' pairs in: every track it read or
    /// made, and every other pair of its keys as idle.
    pub(crate) fn of(
        epoch: i64,
        keys: &[IncidentKey<'k>],
        mut tracks: HashMap<(&'k str, &'static str), Track>,
    ) -> KeptTracks<'k> {
        let mut kept = Vec::with_capacity(tracks.len());
        let mut seen = HashSet::new();
        for k in keys {
            let pair = (k.point_id, k.metal.symbol());
            if seen.insert(pair) {
                let track = tracks.remove(&pair);
                kept.push((k.point_id, k.metal, track));
            }
        }
        KeptTracks {
            epoch,
            tracks: kept,
        }
    }
}

impl TrackCache {
    /// The kept state, emptied if a thread panicked while holding it.
    fn lock(&self) -> MutexGuard<'_, Kept> {
        match self.kept.lock() {
            Ok(kept) => kept,
            Err(poisoned) => {
                let mut kept = poisoned.into_inner();
                kept.epoch = None;
                kept.clear();
                kept
            }
        }
    }

    /// Starts a batch that drew `epoch` under the incident lock: puts the kept tracks of the
    /// keys' pairs into `tracks` when the cache is current (it forgets everything when not),
    /// and returns the keys of the pairs it does not hold at all, whose open tracks are to be
    /// read from the database (an idle pair has none).
    pub(crate) fn begin<'k>(
        &self,
        epoch: i64,
        keys: &[IncidentKey<'k>],
        tracks: &mut HashMap<(&'k str, &'static str), Track>,
    ) -> Vec<IncidentKey<'k>> {
        let mut kept = self.lock();
        let current = kept.epoch.is_some() && kept.epoch == epoch.checked_sub(1);
        if !current {
            kept.clear();
        }
        let mut unknown = Vec::new();
        for k in keys {
            let pair = (k.point_id, k.metal.symbol());
            if tracks.contains_key(&pair) {
                continue;
            }
            let found = kept
                .points
                .get(k.point_id)
                .and_then(|metals| metals.iter().find(|(m, _)| *m == k.metal));
            match found {
                Some((_, Some(t))) => {
                    tracks.insert(pair, t.clone());
                }
                Some((_, None)) => {}
                None => unknown.push(*k),
            }
        }
        unknown
    }

    /// Keeps a committed batch's tracks under the epoch it drew. Call only after COMMIT
    /// succeeded.
    pub(crate) fn committed(&self, batch: KeptTracks<'_>) {
        let mut kept = self.lock();
        if kept.pairs + batch.tracks.len() > MAX_PAIRS {
            kept.clear();
        }
        for (point, metal, track) in batch.tracks {
            let metals = match kept.points.get_mut(point) {
                Some(metals) => metals,
                None => kept.points.entry(Box::from(point)).or_default(),
            };
            match metals.iter_mut().find(|(m, _)| *m == metal) {
                Some(slot) => slot.1 = track,
                None => {
                    metals.push((metal, track));
                    kept.pairs += 1;
                }
            }
        }
        kept.epoch = Some(batch.epoch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::judge::Level;
    use chrono::{DateTime, TimeZone, Utc};

    fn key(point: &str, metal: Metal) -> IncidentKey<'_> {
        IncidentKey {
            point_id: point,
            metal,
            sampled_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            level: Level::Screening,
        }
    }

    fn track(secs: i64) -> Track {
        Track {
            last_sampled_at: t(secs),
            active: None,
        }
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    /// Commits a batch of `pairs`: with a track of that second, or idle (`None`).
    fn commit(cache: &TrackCache, epoch: i64, pairs: &[(&str, Metal, Option<i64>)]) {
        let keys: Vec<_> = pairs.iter().map(|(p, m, _)| key(p, *m)).collect();
        let mut tracks = HashMap::new();
        for (p, m, s) in pairs {
            if let Some(s) = s {
                tracks.insert((*p, m.symbol()), track(*s));
            }
        }
        cache.committed(KeptTracks::of(epoch, &keys, tracks));
    }

    #[test]
    fn a_current_cache_answers_for_the_pairs_it_kept() {
        let cache = TrackCache::default();
        commit(
            &cache,
            7,
            &[("P1", Metal::Cd, Some(5)), ("P1", Metal::As, None)],
        );
        let keys = [
            key("P1", Metal::Cd),
            key("P1", Metal::As),
            key("P1", Metal::Pb),
            key("P2", Metal::Cd),
        ];
        let mut tracks = HashMap::new();
        let unknown = cache.begin(8, &keys, &mut tracks);
        assert_eq!(tracks.get(&("P1", "Cd")), Some(&track(5)));
        assert_eq!(tracks.len(), 1, "an idle pair has no track");
        let unknown: Vec<_> = unknown.iter().map(|k| (k.point_id, k.metal)).collect();
        assert_eq!(unknown, [("P1", Metal::Pb), ("P2", Metal::Cd)]);
    }

    #[test]
    fn a_pair_with_several_samples_in_a_batch_keeps_its_track() {
        let cache = TrackCache::default();
        let keys = [key("P1", Metal::Cd), key("P1", Metal::Cd)];
        let mut tracks = HashMap::new();
        tracks.insert(("P1", "Cd"), track(5));
        cache.committed(KeptTracks::of(7, &keys, tracks));
        let mut tracks = HashMap::new();
        assert!(cache.begin(8, &keys, &mut tracks).is_empty());
        assert_eq!(tracks.get(&("P1", "Cd")), Some(&track(5)));
    }

    #[test]
    fn another_writer_in_between_empties_the_cache() {
        let cache = TrackCache::default();
        commit(&cache, 7, &[("P1", Metal::Cd, Some(5))]);
        let mut tracks = HashMap::new();
        // 9, not 8: someone else drew 8.
        let unknown = cache.begin(9, &[key("P1", Metal::Cd)], &mut tracks);
        assert!(tracks.is_empty());
        assert_eq!(unknown.len(), 1);
    }

    #[test]
    fn a_batch_that_rolls_back_makes_the_next_one_read_again() {
        let cache = TrackCache::default();
        commit(&cache, 7, &[("P1", Metal::Cd, Some(5))]);
        let mut tracks = HashMap::new();
        assert!(cache
            .begin(8, &[key("P1", Metal::Cd)], &mut tracks)
            .is_empty());
        // Batch 8 rolled back (or its COMMIT timed out) and never reached `committed`; it
        // used up 8, so the next batch draws 9 and must read everything again.
        let mut tracks = HashMap::new();
        let unknown = cache.begin(9, &[key("P1", Metal::Cd)], &mut tracks);
        assert!(tracks.is_empty());
        assert_eq!(unknown.len(), 1);
    }

    #[test]
    fn a_committed_batch_replaces_its_pairs_and_keeps_the_rest() {
        let cache = TrackCache::default();
        commit(
            &cache,
            7,
            &[("P1", Metal::Cd, Some(5)), ("P1", Metal::Pb, Some(6))],
        );
        let mut tracks = HashMap::new();
        cache.begin(8, &[key("P1", Metal::Cd)], &mut tracks);
        commit(&cache, 8, &[("P1", Metal::Cd, Some(9))]);
        let mut tracks = HashMap::new();
        let keys = [key("P1", Metal::Cd), key("P1", Metal::Pb)];
        assert!(cache.begin(9, &keys, &mut tracks).is_empty());
        assert_eq!(tracks.get(&("P1", "Cd")), Some(&track(9)));
        assert_eq!(tracks.get(&("P1", "Pb")), Some(&track(6)));
    }
}
