//! Incidents: one per (point, metal), opened on a first exceedance, escalated or de-escalated
//! between screening and intervention, cleared after N consecutive non-exceeding samples.
//!
//! Decided by `sampled_at`: a sample older than the newest one already seen for the pair is
//! *late* ([`is_late`]). It is stored but never changes the state, so a late delivery cannot
//! reopen or flip a newer state. A late sample that exceeds is still made visible: [`late`]
//! turns it into a [`LateExceedance`], an alert event of its own that changes no incident and
//! no track.
//!
//! Lab and station results are ordered the same way, by `sampled_at` alone. A lab result
//! with the *same* `sampled_at` as the newest sample seen (e.g. a field XRF screening of the
//! same sample) is not late and is applied normally: it can open, escalate, de-escalate or
//! count towards clearing. That lets the more authoritative lab method decide a sampling
//! time that a screening decided first, without a source-dependent rule.
//!
//! `undeterminable` and `no_standard` readings neither open nor clear anything, and are never
//! late exceedances.

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

/// An exceeding sample older than the newest one already applied to its pair: alerted as
/// `late_exceedance`, with no change of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateExceedance {
    /// The sample's level: `Screening` or `Intervention`.
    pub level: Level,
    /// The newest applied `sampled_at` of the pair, which the sample is older than.
    pub newer_sampled_at: DateTime<Utc>,
    /// The pair's open incident, if it has one.
    pub incident_id: Option<Uuid>,
}

impl LateExceedance {
    /// The wire spelling of its alert state.
    pub const STATE: &'static str = "late_exceedance";
}

/// Whether a sample taken at `sampled_at` is late for `track`: strictly older than the
/// newest sample applied. A sample of the same time is not late.
pub fn is_late(track: &Track, sampled_at: DateTime<Utc>) -> bool {
    sampled_at < track.last_sampled_at
}

/// The late exceedance a sample raises, if it is late for `prev` and exceeds. The track is
/// left as it is (apply the sample with [`apply`], which ignores it).
pub fn late(
    prev: Option<&Track>,
    sampled_at: DateTime<Utc>,
    level: Level,
) -> Option<LateExceedance> {
    let p = prev?;
    (level.exceeds() && is_late(p, sampled_at)).then(|| LateExceedance {
        level,
        newer_sampled_at: p.last_sampled_at,
        incident_id: p.active.as_ref().map(|a| a.incident_id),
    })
}

/// Applies one judged sample to a pair's track. Returns the new track (unchanged for a late
/// sample, see [`late`]) and the state change, if any. `new_id` is called only when an
/// incident opens.
pub fn apply(
    prev: Option<&Track>,
    sampled_at: DateTime<Utc>,
    level: Level,
    clear_after: u32,
    new_id: impl FnOnce() -> Uuid,
) -> (Track, Option<Change>) {
    if let Some(p) = prev {
        if is_late(p, sampled_at) {
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
    fn a_late_exceedance_is_raised_without_changing_the_track() {
        use Level::*;
        // Clean at 5, no incident: an intervention sample of 3 is late, with no incident.
        let (track, _) = run(&[(5, None)], 1);
        let track = Some(track.unwrap());
        assert_eq!(
            late(track.as_ref(), t(3), Intervention),
            Some(LateExceedance {
                level: Intervention,
                newer_sampled_at: t(5),
                incident_id: Option::None,
            })
        );
        let (next, change) = apply(track.as_ref(), t(3), Intervention, 1, Uuid::now_v7);
        assert_eq!(Some(next), track);
        assert_eq!(change, Option::None);
        // With an open incident, the late exceedance names it; its level stays.
        let (track, _) = run(&[(5, Screening)], 1);
        let open = track.as_ref().and_then(|t| t.active.clone()).unwrap();
        let l = late(track.as_ref(), t(4), Screening).unwrap();
        assert_eq!(l.incident_id, Some(open.incident_id));
        assert_eq!(l.newer_sampled_at, t(5));
    }

    #[test]
    fn only_late_exceeding_samples_are_late_exceedances() {
        use Level::*;
        let (track, _) = run(&[(5, None)], 1);
        for level in [None, Undeterminable, NoStandard] {
            assert_eq!(late(track.as_ref(), t(3), level), Option::None);
        }
        // The same sampling time is not late: applied normally, it opens.
        assert_eq!(late(track.as_ref(), t(5), Screening), Option::None);
        let (_, change) = apply(track.as_ref(), t(5), Screening, 1, Uuid::now_v7);
        assert_eq!(change.map(|c| c.transition), Some(Transition::Opened));
        // A newer one is not late, and a pair never seen has nothing to be late for.
        assert_eq!(late(track.as_ref(), t(6), Screening), Option::None);
        assert_eq!(late(Option::None, t(1), Intervention), Option::None);
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
