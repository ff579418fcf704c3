//! When a subscription's daily digest (or reminder) is due, pure.
//!
//! A digest is sent at a local time of day, `HH:MM`, in a fixed UTC offset
//! (`deliver.digest_utc_offset_hours`, 8 for Asia/Shanghai: China has had no daylight
//! saving time since 1991, so a fixed +08:00 is exact). The *slot* is the latest occurrence
//! of that time at or before now; the digest of a slot is due once the slot is later than
//! the last slot sent (or than the subscription's creation, before the first digest). A
//! digest missed while soilmon was down is sent once when it comes back, not once per
//! missed day.

use chrono::{DateTime, Duration, FixedOffset, NaiveTime, TimeZone, Utc};

/// Parses `HH:MM` (24-hour clock).
pub fn parse_local_time(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text.trim(), "%H:%M")
        .map_err(|_| format!("time {text:?}: expected HH:MM, 24-hour clock (e.g. 08:30)"))
}

/// The latest occurrence of local time `at` (in `offset`) at or before `now`.
pub fn slot(at: NaiveTime, offset: FixedOffset, now: DateTime<Utc>) -> DateTime<Utc> {
    let local_day = now.with_timezone(&offset).date_naive();
    let today = offset
        .from_local_datetime(&local_day.and_time(at))
        .single()
        .map_or(now, |t| t.with_timezone(&Utc));
    if today <= now {
        today
    } else {
        today - Duration::days(1)
    }
}

/// The slot to send now, if one is due: the current slot when it is later than the last
/// one sent (`last_sent`, else the subscription's creation `created`).
pub fn due(
    at: NaiveTime,
    offset: FixedOffset,
    last_sent: Option<DateTime<Utc>>,
    created: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let s = slot(at, offset, now);
    (s > last_sent.unwrap_or(created)).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cst() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }

    #[test]
    fn parses_hh_mm() {
        assert_eq!(
            parse_local_time("08:30").unwrap(),
            NaiveTime::from_hms_opt(8, 30, 0).unwrap()
        );
        assert!(parse_local_time("8h30").is_err());
        assert!(parse_local_time("25:00").is_err());
    }

    #[test]
    fn slot_is_the_latest_local_time_at_or_before_now() {
        let at = parse_local_time("08:30").unwrap();
        // 10:00 Beijing: today's 08:30 Beijing = 00:30 UTC.
        assert_eq!(
            slot(at, cst(), utc("2026-12-06T02:00:00Z")),
            utc("2026-12-06T00:30:00Z")
        );
        // 07:00 Beijing: yesterday's.
        assert_eq!(
            slot(at, cst(), utc("2026-12-05T23:00:00Z")),
            utc("2026-12-05T00:30:00Z")
        );
        // Exactly at the time.
        assert_eq!(
            slot(at, cst(), utc("2026-12-06T00:30:00Z")),
            utc("2026-12-06T00:30:00Z")
        );
    }

    #[test]
    fn due_once_per_slot_and_not_before_creation() {
        let at = parse_local_time("08:30").unwrap();
        let created = utc("2026-12-06T01:00:00Z"); // 09:00 Beijing, after today's slot
        assert_eq!(
            due(at, cst(), None, created, utc("2026-12-06T05:00:00Z")),
            None
        );
        let next = utc("2026-12-07T00:30:00Z");
        assert_eq!(
            due(at, cst(), None, created, utc("2026-12-07T00:31:00Z")),
            Some(next)
        );
        assert_eq!(
            due(at, cst(), Some(next), created, utc("2026-12-07T09:00:00Z")),
            None
        );
        // Down for three days: one digest, for the latest slot.
        assert_eq!(
            due(at, cst(), Some(next), created, utc("2026-12-10T01:00:00Z")),
            Some(utc("2026-12-10T00:30:00Z"))
        );
    }
}
