//! The input rules shared by the two ways data comes in, station payloads
//! (`ingest::payload`) and lab batches (`lab::checks`): id validity, a concentration's sign and
//! physical ceiling, the accepted time window, and pH validity. Each rule is written once here
//! and returns a [`RuleError`]; each surface maps a failure to its own reason code (station
//! `RejectCode`, lab `CheckCode`) and its own message. Pure: no I/O.
//!
//! **Ids** (`msg_id`; lab `batch_id`, `lab_id`, `sample_id`): 1–[`MAX_ID_BYTES`] bytes of
//! UTF-8 (bytes, not characters: an id of 128 Chinese characters is 384 bytes and is
//! refused), with no control character. Surrounding whitespace is not a rule here: a station's
//! `msg_id` is taken as sent, and the lab readers trim every cell before it is checked.

use chrono::{DateTime, Duration, Utc};

/// Longest id, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 128;

/// Lowest valid pH.
pub const PH_MIN: f64 = 0.0;

/// Highest valid pH.
pub const PH_MAX: f64 = 14.0;

/// A broken input rule, with the figures a surface needs for its message.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RuleError {
    /// An id that is empty, longer than [`MAX_ID_BYTES`] bytes, or holds a control character.
    #[error("an id must be 1-{MAX_ID_BYTES} bytes with no control character")]
    BadId,
    /// A negative concentration.
    #[error("{value} is negative")]
    Negative {
        /// The value as sent.
        value: f64,
    },
    /// A concentration above the analyte's physical ceiling.
    #[error("{value_mgkg} mg/kg is above the ceiling {ceiling_mgkg} mg/kg")]
    AboveCeiling {
        /// The value in mg/kg.
        value_mgkg: f64,
        /// The ceiling in mg/kg.
        ceiling_mgkg: f64,
    },
    /// A time before the earliest accepted one.
    #[error("before {earliest}")]
    TooOld {
        /// The earliest accepted time.
        earliest: DateTime<Utc>,
    },
    /// A time further in the future than the allowed clock skew.
    #[error("more than {skew_secs} s after {now}")]
    InFuture {
        /// The server time.
        now: DateTime<Utc>,
        /// The allowed skew, seconds.
        skew_secs: i64,
    },
    /// A pH outside 0–14.
    #[error("pH {ph} is outside 0-14")]
    PhOutOfRange {
        /// The pH as sent.
        ph: f64,
    },
}

/// Checks an id: 1–[`MAX_ID_BYTES`] bytes, no control character (see the module doc).
pub fn check_id(id: &str) -> Result<(), RuleError> {
    if (1..=MAX_ID_BYTES).contains(&id.len()) && !id.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(RuleError::BadId)
    }
}

/// Checks that a concentration (or a detection limit) is not negative.
pub fn check_not_negative(value: f64) -> Result<(), RuleError> {
    if value < 0.0 {
        Err(RuleError::Negative { value })
    } else {
        Ok(())
    }
}

/// Checks a concentration in mg/kg against its analyte's physical ceiling (at the ceiling is
/// accepted).
pub fn check_ceiling(value_mgkg: f64, ceiling_mgkg: f64) -> Result<(), RuleError> {
    if value_mgkg > ceiling_mgkg {
        Err(RuleError::AboveCeiling {
            value_mgkg,
            ceiling_mgkg,
        })
    } else {
        Ok(())
    }
}

/// Checks a concentration as sent (`value` in a unit worth `to_mg_per_kg` mg/kg): not
/// negative, then not above `ceiling_mgkg`. Returns the value in mg/kg.
pub fn check_concentration(
    value: f64,
    to_mg_per_kg: f64,
    ceiling_mgkg: f64,
) -> Result<f64, RuleError> {
    check_not_negative(value)?;
    let value_mgkg = value * to_mg_per_kg;
    check_ceiling(value_mgkg, ceiling_mgkg)?;
    Ok(value_mgkg)
}

/// The accepted time window of a sampling (or analysis) time: from `earliest` to `skew_secs`
/// seconds after the server time, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// The earliest accepted time.
    pub earliest: DateTime<Utc>,
    /// The server time.
    pub now: DateTime<Utc>,
    /// How far after `now` a time may lie, seconds (clock skew of the sender).
    pub skew_secs: i64,
}

impl TimeWindow {
    /// Checks `at`: too old first, then too far in the future.
    pub fn check(&self, at: DateTime<Utc>) -> Result<(), RuleError> {
        if at < self.earliest {
            return Err(RuleError::TooOld {
                earliest: self.earliest,
            });
        }
        if at > self.now + Duration::seconds(self.skew_secs) {
            return Err(RuleError::InFuture {
                now: self.now,
                skew_secs: self.skew_secs,
            });
        }
        Ok(())
    }
}

/// Checks a pH: 0–14, both ends included.
pub fn check_ph(ph: f64) -> Result<(), RuleError> {
    if (PH_MIN..=PH_MAX).contains(&ph) {
        Ok(())
    } else {
        Err(RuleError::PhOutOfRange { ph })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_count_bytes_not_characters() {
        assert_eq!(check_id(&"a".repeat(MAX_ID_BYTES)), Ok(()));
        assert_eq!(
            check_id(&"a".repeat(MAX_ID_BYTES + 1)),
            Err(RuleError::BadId)
        );
        // 126 ASCII bytes + one 2-byte character = 128 bytes: accepted.
        let at_limit = format!("{}é", "a".repeat(MAX_ID_BYTES - 2));
        assert_eq!(at_limit.len(), MAX_ID_BYTES);
        assert_eq!(check_id(&at_limit), Ok(()));
        // 127 characters but 129 bytes: refused.
        let over = format!("{}é", "a".repeat(MAX_ID_BYTES - 1));
        assert_eq!(over.chars().count(), MAX_ID_BYTES);
        assert_eq!(check_id(&over), Err(RuleError::BadId));
        // 43 three-byte characters (129 bytes): refused; 42 (126 bytes): accepted.
        assert_eq!(check_id(&"样".repeat(43)), Err(RuleError::BadId));
        assert_eq!(check_id(&"样".repeat(42)), Ok(()));
    }

    #[test]
    fn ids_are_non_empty_without_control_characters() {
        assert_eq!(check_id(""), Err(RuleError::BadId));
        assert_eq!(check_id("a\nb"), Err(RuleError::BadId));
        assert_eq!(check_id("a\u{7f}"), Err(RuleError::BadId));
        assert_eq!(check_id("st07-000123"), Ok(()));
        // Spaces are printable: surrounding whitespace is each surface's business.
        assert_eq!(check_id(" S1 "), Ok(()));
    }

    #[test]
    fn concentrations_from_zero_to_the_ceiling() {
        assert_eq!(check_not_negative(0.0), Ok(()));
        assert_eq!(check_not_negative(-0.0), Ok(()));
        assert_eq!(
            check_not_negative(-0.001),
            Err(RuleError::Negative { value: -0.001 })
        );
        assert_eq!(check_ceiling(20.0, 20.0), Ok(()));
        assert_eq!(
            check_ceiling(20.5, 20.0),
            Err(RuleError::AboveCeiling {
                value_mgkg: 20.5,
                ceiling_mgkg: 20.0
            })
        );
        assert_eq!(check_concentration(0.0, 0.001, 20.0), Ok(0.0));
        assert_eq!(check_concentration(20_000.0, 0.001, 20.0), Ok(20.0));
        assert_eq!(
            check_concentration(20.0, 1000.0, 20.0),
            Err(RuleError::AboveCeiling {
                value_mgkg: 20_000.0,
                ceiling_mgkg: 20.0
            })
        );
        // The sign is checked first, on the value as sent.
        assert_eq!(
            check_concentration(-1.0, 1000.0, 20.0),
            Err(RuleError::Negative { value: -1.0 })
        );
    }

    #[test]
    fn the_time_window_includes_both_edges() {
        let at = |y, mo, d, h, mi, s| {
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .single()
                .unwrap_or_default()
        };
        let w = TimeWindow {
            earliest: at(2000, 1, 1, 0, 0, 0),
            now: at(2026, 11, 29, 0, 0, 0),
            skew_secs: 300,
        };
        assert_eq!(w.check(w.earliest), Ok(()));
        assert_eq!(
            w.check(at(1999, 12, 31, 23, 59, 59)),
            Err(RuleError::TooOld {
                earliest: w.earliest
            })
        );
        assert_eq!(w.check(at(2026, 11, 29, 0, 5, 0)), Ok(()));
        assert_eq!(
            w.check(at(2026, 11, 29, 0, 5, 1)),
            Err(RuleError::InFuture {
                now: w.now,
                skew_secs: 300
            })
        );
        let no_skew = TimeWindow { skew_secs: 0, ..w };
        assert_eq!(no_skew.check(w.now), Ok(()));
        assert!(no_skew.check(at(2026, 11, 29, 0, 0, 1)).is_err());
    }

    #[test]
    fn ph_from_0_to_14() {
        assert_eq!(check_ph(0.0), Ok(()));
        assert_eq!(check_ph(14.0), Ok(()));
        assert_eq!(check_ph(7.0), Ok(()));
        assert_eq!(check_ph(-0.1), Err(RuleError::PhOutOfRange { ph: -0.1 }));
        assert_eq!(check_ph(14.01), Err(RuleError::PhOutOfRange { ph: 14.01 }));
        assert!(check_ph(f64::NAN).is_err());
    }
}

/// Longest point id, in bytes (point ids are ASCII).
pub const MAX_POINT_ID_BYTES: usize = 64;

/// True for a monitoring-point id: ASCII letters, digits, `-` and `_`, 1 to
/// [`MAX_POINT_ID_BYTES`] long (safe as an MQTT topic level and a file name). Stricter than
/// the other ids ([`check_id`]): the registry import and the lab checks both use it.
pub fn valid_point_id(id: &str) -> bool {
    (1..=MAX_POINT_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod point_id_tests {
    use super::*;

    #[test]
    fn point_ids_are_ascii_letters_digits_dash_and_underscore() {
        assert!(valid_point_id("441781-B-0001"));
        assert!(valid_point_id("p_1"));
        assert!(valid_point_id(&"a".repeat(MAX_POINT_ID_BYTES)));
        assert!(!valid_point_id(&"a".repeat(MAX_POINT_ID_BYTES + 1)));
        assert!(!valid_point_id(""));
        assert!(!valid_point_id("441781 B"));
        assert!(!valid_point_id("a/b"));
        assert!(!valid_point_id("a+"));
        assert!(!valid_point_id("点位1"));
    }
}
