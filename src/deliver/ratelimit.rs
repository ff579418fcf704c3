//! Robot rate limits, pure: DingTalk allows 20 messages a minute per robot (WeCom the same).
//! Past the limit, pending alerts are folded into one summary message rather than dropped
//! or sent into a refusal.
//!
//! [`Window`] remembers when the last messages of one robot were sent. While slots are free,
//! each alert goes alone; the last free slot of a window carries every alert then pending
//! (up to a cap) as one summary; with no slot free the subscription waits until the oldest
//! send leaves the window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The sliding window of one robot.
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    period: Duration,
    sent: VecDeque<Instant>,
}

/// What the next send of a subscription may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One alert, as usual.
    Single,
    /// The last slot of the window: fold every pending alert into one summary.
    Fold,
    /// No slot free before this instant.
    WaitUntil(Instant),
}

impl Window {
    /// A window of `limit` messages per `period` (0: unlimited).
    pub fn new(limit: usize, period: Duration) -> Window {
        Window {
            limit,
            period,
            sent: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.period)
        {
            self.sent.pop_front();
        }
    }

    /// The plan for a send at `now`.
    pub fn plan(&mut self, now: Instant) -> Plan {
        if self.limit == 0 {
            return Plan::Single;
        }
        self.expire(now);
        let used = self.sent.len();
        if used >= self.limit {
            match self.sent.front() {
                Some(t) => Plan::WaitUntil(*t + self.period),
                None => Plan::Single,
            }
        } else if used + 1 == self.limit {
            Plan::Fold
        } else {
            Plan::Single
        }
    }

    /// Records one message sent at `now` (whatever it carried).
    pub fn record(&mut self, now: Instant) {
        if self.limit > 0 {
            self.sent.push_back(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nineteen_singles_then_a_fold_then_wait_a_minute() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut w = Window::new(20, minute);
        for i in 0..19 {
            let now = t0 + Duration::from_millis(i);
            assert_eq!(w.plan(now), Plan::Single, "send {i}");
            w.record(now);
        }
        let now = t0 + Duration::from_millis(19);
        assert_eq!(w.plan(now), Plan::Fold);
        w.record(now);
        assert_eq!(w.plan(now), Plan::WaitUntil(t0 + minute));
        // The first send leaves the window: one slot, the last one, so a fold again.
        assert_eq!(w.plan(t0 + minute), Plan::Fold);
        // All of them gone: singles again.
        assert_eq!(w.plan(t0 + minute * 2), Plan::Single);
    }

    #[test]
    fn zero_is_unlimited() {
        let mut w = Window::new(0, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(w.plan(now), Plan::Single);
            w.record(now);
        }
    }
}
