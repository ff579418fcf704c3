//! Retry timing, pure: exponential back-off with jitter, the receiver's `Retry-After`, and
//! when a delivery is given up (dead-lettered).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The retry policy of the delivery engine (`[deliver]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delay after the first failure (before jitter).
    pub min: Duration,
    /// Longest delay from back-off.
    pub max: Duration,
    /// Longest `Retry-After` honoured (a larger one is cut to this).
    pub retry_after_max: Duration,
    /// Attempts after which a delivery is dead-lettered.
    pub max_attempts: i32,
    /// Age after which a failing delivery is dead-lettered.
    pub max_age: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Give up: dead-letter (retryable by hand).
    Dead,
}

impl Policy {
    /// The back-off delay after `attempts` failed attempts (1 for the first), with "equal
    /// jitter": half the exponential delay fixed, half random (`jitter` in 0..1), so
    /// receivers coming back are not hit by every subscription at once.
    pub fn backoff(&self, attempts: i32, jitter: f64) -> Duration {
        let exp = attempts.clamp(1, 31) as u32 - 1;
        let base = self.min.saturating_mul(1u32 << exp.min(20)).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        base / 2 + base.mul_f64(jitter / 2.0)
    }

    /// The decision after attempt number `attempts` failed for a delivery created at
    /// `created`; `retry_after` is the receiver's own wish, which wins over back-off.
    pub fn after_failure(
        &self,
        attempts: i32,
        created: DateTime<Utc>,
        now: DateTime<Utc>,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        let age = (now - created).to_std().unwrap_or_default();
        if attempts >= self.max_attempts || age >= self.max_age {
            return Next::Dead;
        }
        match retry_after {
            Some(d) => Next::RetryIn(d.min(self.retry_after_max)),
            None => Next::RetryIn(self.backoff(attempts, jitter)),
        }
    }
}

/// Parses an HTTP `Retry-After` value: delay seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            min: Duration::from_secs(1),
            max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(600),
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.backoff(3, 0.5), Duration::from_secs(3));
        assert_eq!(p.backoff(10, 1.0), Duration::from_secs(60));
        assert_eq!(p.backoff(1000, 1.0), Duration::from_secs(60));
    }

    #[test]
    fn retry_after_wins_and_is_capped() {
        let p = policy();
        let now = Utc::now();
        let d = Some(Duration::from_secs(7));
        assert_eq!(
            p.after_failure(1, now, now, d, 0.0),
            Next::RetryIn(Duration::from_secs(7))
        );
        let huge = Some(Duration::from_secs(86400));
        assert_eq!(
            p.after_failure(1, now, now, huge, 0.0),
            Next::RetryIn(Duration::from_secs(600))
        );
    }

    #[test]
    fn dead_after_max_attempts_or_age() {
        let p = policy();
        let now = Utc::now();
        assert!(matches!(
            p.after_failure(4, now, now, None, 0.0),
            Next::RetryIn(_)
        ));
        assert_eq!(p.after_failure(5, now, now, None, 0.0), Next::Dead);
        let old = now - chrono::Duration::hours(2);
        assert_eq!(p.after_failure(1, old, now, None, 0.0), Next::Dead);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
