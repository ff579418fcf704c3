//! Incidents: one per (point, metal), opened on a first exceedance, escalated or de-escalated
//! between screening and intervention, cleared after N consecutive non-exceeding samples.
//!
//! Decided by `sampled_at`: a sample older than the newest one already seen for the pair is
//! stored but never changes the state, so a late delivery cannot reopen or flip a newer state.
//! `undeterminable` and `no_standard` readings neither open nor clear anything.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::judge::Level;

/// An alert state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    /// First exceedance after a clear state.
    Opened,
    /// Screening → intervention.
    Escalated,
    /// Intervention → screening.
    Deescalated,
    /// N consecutive non-exceeding samples.
    Cleared,
}

impl Transition {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Opened => "opened",
            Transition::Escalated => "escalated",
            Transition::Deescalated => "deescalated",
            Transition::Cleared => "cleared",
        }
    }
}

/// The open incident of a (point, metal) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    /// Incident id, stable for the incident's whole life.
    pub incident_id: Uuid,
    /// Current level: `Screening` or `Intervention`.
    pub level: Level,
    /// Consecutive non-exceeding samples seen since the last exceedance.
    pub ok_streak: u32,
}

/// What soilmon remembers per (point, metal) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Newest `sampled_at` that has been applied.
    pub last_sampled_at: DateTime<Utc>,
    /// The open incident, if any.
    pub active: Option<Active>,
}

/// A state change to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub transition: Transition,
    /// Incident it belongs to.
    pub incident_id: Uuid,
    /// Level after the change (for `Cleared`: the level the incident had when it cleared).
    pub level: Level,
}

/// Applies one judged sample to a pair's track. Returns the new track (unchanged for a stale
/// sample) and the state change, if any. `new_id` is called only when an incident opens.
pub fn apply(
    prev: Option<&Track>,
    sampled_at: DateTime<Utc>,
    level: Level,
    clear_after: u32,
    new_id: impl FnOnce() -> Uuid,
) -> (Track, Option<Change>) {
    if let Some(p) = prev {
        if sampled_at < p.last_sampled_at {
            return (p.clone(), None);
        }
    }
    let active = prev.and_then(|p| p.active.clone());
    let track = |active| Track {
        last_sampled_at: sampled_at,
        active,
    };
    match (active, level) {
        (None, l) if l.exceeds() => {
            let incident_id = new_id();
            let change = Change {
                transition: Transition::Opened,
                incident_id,
                level: l,
            };
            let a = Active {
                incident_id,
                level: l,
                ok_streak: 0,
            };
            (track(Some(a)), Some(change))
        }
        (Some(a), l) if l.exceeds() => {
            let transition = match (a.level, l) {
                (Level::Screening, Level::Intervention) => Some(Transition::Escalated),
                (Level::Intervention, Level::Screening) => Some(Transition::Deescalated),
                _ => None,
            };
            let change = transition.map(|transition| Change {
                transition,
                incident_id: a.incident_id,
                level: l,
            });
            let a = Active {
                level: l,
                ok_streak: 0,
                ..a
            };
            (track(Some(a)), change)
        }
        (Some(a), Level::None) => {
            let ok_streak = a.ok_streak + 1;
            if ok_streak >= clear_after {
                let change = Change {
                    transition: Transition::Cleared,
                    incident_id: a.incident_id,
                    level: a.level,
                };
                (track(None), Some(change))
            } else {
                (track(Some(Active { ok_streak, ..a })), None)
            }
        }
        // Undeterminable / no standard: time moves on, the state does not.
        (active, _) => (track(active), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, h, 0, 0).unwrap()
    }

    /// Runs a sequence and returns the transitions seen.
    fn run(seq: &[(u32, Level)], clear_after: u32) -> (Option<Track>, Vec<Transition>) {
        let mut track: Option<Track> = None;
        let mut seen = Vec::new();
        for (h, level) in seq {
            let (next, change) = apply(track.as_ref(), t(*h), *level, clear_after, Uuid::now_v7);
            if let Some(c) = change {
                seen.push(c.transition);
            }
            track = Some(next);
        }
        (track, seen)
    }

    #[test]
    fn full_life_cycle() {
        use Level::*;
        use Transition::*;
        let (track, seen) = run(
            &[
                (1, None),
                (2, Screening),
                (3, Intervention),
                (4, Screening),
                (5, None),
                (6, Screening),
                (7, None),
                (8, None),
            ],
            2,
        );
        assert_eq!(seen, vec![Opened, Escalated, Deescalated, Cleared]);
        assert!(track.unwrap().active.is_none());
    }

    #[test]
    fn late_older_sample_changes_nothing() {
        use Level::*;
        let (track, seen) = run(
            &[(5, Screening), (3, Intervention), (4, None), (2, None)],
            1,
        );
        assert_eq!(seen, vec![Transition::Opened]);
        let track = track.unwrap();
        assert_eq!(track.last_sampled_at, t(5));
        assert_eq!(track.active.unwrap().level, Screening);
        // A stale sample after a clear does not reopen.
        let (_, seen) = run(&[(5, Screening), (6, None), (4, Intervention)], 1);
        assert_eq!(seen, vec![Transition::Opened, Transition::Cleared]);
    }

    #[test]
    fn undeterminable_neither_opens_nor_clears() {
        use Level::*;
        let (_, seen) = run(&[(1, Undeterminable), (2, NoStandard)], 1);
        assert!(seen.is_empty());
        let (track, seen) = run(
            &[(1, Screening), (2, Undeterminable), (3, Undeterminable)],
            1,
        );
        assert_eq!(seen, vec![Transition::Opened]);
        assert!(track.unwrap().active.is_some());
    }

    #[test]
    fn the_same_level_again_is_silent_and_resets_the_streak() {
        use Level::*;
        let (track, seen) = run(&[(1, Screening), (2, None), (3, Screening), (4, None)], 2);
        assert_eq!(seen, vec![Transition::Opened]);
        assert_eq!(track.unwrap().active.unwrap().ok_streak, 1);
    }
}
