//! One sending task of the engine: a claimed batch of one subscription (its queue head and
//! the deliveries that follow it, or one incident key's), sent one request after the other,
//! in outbox order, over the subscription's client (a kept-alive connection); or, for a
//! robot past its rate limit, one folded summary message.
//!
//! The task touches no database: it hands back what to record per delivery ([`Mark`]),
//! and the engine records the outcomes of every batch finished in a round in one statement.
//! A batch stops at its first failure (retried or dead-lettered by the policy; the rest go
//! back to the queue unattempted, so the key's order holds), at shutdown, and before a
//! request that could outlast the lease or [`BUDGET`]: the rest go back too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::backoff::{Next, Policy};
use super::engine::Done;
use super::{render, webhook, ChannelKind, Outcome, Target};
use crate::store::deliveries::{Claimed, Mark};
use crate::telemetry;

/// A batch starts no request after this long, so that a slow receiver's task makes room for
/// the other subscriptions' tasks now and then (its next batch is claimed at once).
pub(super) const BUDGET: Duration = Duration::from_secs(2);

/// One sending task: the subscription's channel and what deciding outcomes needs.
pub(super) struct Batch {
    /// The subscription.
    pub(super) target: Arc<Target>,
    /// Message context (county names, console link).
    pub(super) ctx: Arc<render::Context>,
    /// Retry policy.
    pub(super) policy: Policy,
    /// The lease the batch was claimed with.
    pub(super) lease: Duration,
    /// The engine's shutdown: the batch stops between two requests.
    pub(super) shutdown: CancellationToken,
}

impl Batch {
    /// Sends `batch` (one by one, or as one folded robot message when `folded`) and returns
    /// what to record.
    pub(super) async fn run(self, batch: Vec<Claimed>, folded: bool) -> Done {
        let marks = if folded {
            self.folded(&batch).await
        } else {
            self.one_by_one(&batch).await
        };
        Done::Delivery(self.target.id, marks)
    }

    async fn one_by_one(&self, batch: &[Claimed]) -> Vec<(i64, Mark)> {
        let started = Instant::now();
        let limit = self.lease.saturating_sub(self.target.timeout()).min(BUDGET);
        let mut marks = Vec::with_capacity(batch.len());
        let mut rest = batch.iter();
        for c in rest.by_ref() {
            // The first request always goes (the timeout is below the lease); later ones
            // only while the lease surely outlives them.
            if !marks.is_empty() && (self.shutdown.is_cancelled() || started.elapsed() > limit) {
                marks.push((c.id, Mark::Release));
                break;
            }
            let mark = self.send(std::slice::from_ref(c)).await;
            let stop = mark != Mark::Delivered;
            marks.push((c.id, mark));
            if stop {
                break;
            }
        }
        marks.extend(rest.map(|c| (c.id, Mark::Release)));
        marks
    }

    async fn folded(&self, batch: &[Claimed]) -> Vec<(i64, Mark)> {
        let mark = self.send(batch).await;
        batch.iter().map(|c| (c.id, mark.clone())).collect()
    }

    /// Sends `events` (one, or several folded) and decides the outcome.
    async fn send(&self, claimed: &[Claimed]) -> Mark {
        let Some(head) = claimed.first() else {
            return Mark::Release;
        };
        let outcome = match claimed {
            // A webhook posts the JSON serialised once at the claim for every subscription.
            [one] if self.target.channel == ChannelKind::Webhook && !one.event.json.is_empty() => {
                let e = &one.event;
                webhook::post(&self.target, &e.payload, &e.json, head.attempts).await
            }
            _ => {
                let events: Vec<render::Event<'_>> =
                    claimed.iter().map(render::Event::of).collect();
                self.target.send(&events, &self.ctx, head.attempts).await
            }
        };
        let channel = self.target.channel.as_str();
        let name = &self.target.name;
        match outcome {
            Outcome::Delivered { .. } => {
                telemetry::delivery_attempted(
                    channel,
                    name,
                    claimed.len(),
                    head.attempts,
                    "delivered",
                    None,
                );
                Mark::Delivered
            }
            Outcome::Failed { error, retry_after } => {
                let next = self.policy.after_failure(
                    head.attempts,
                    head.created_at,
                    chrono::Utc::now(),
                    retry_after,
                    rand::random::<f64>(),
                );
                let (mark, label) = match next {
                    Next::RetryIn(after) => (
                        Mark::Retry {
                            after,
                            error: error.clone(),
                        },
                        "retry",
                    ),
                    Next::Dead => (
                        Mark::Dead {
                            error: error.clone(),
                        },
                        "dead",
                    ),
                };
                telemetry::delivery_attempted(
                    channel,
                    name,
                    claimed.len(),
                    head.attempts,
                    label,
                    Some(&error),
                );
                mark
            }
        }
    }
}
