//! Network management tasks inside `soilmon run`: the periodic overdue check (a point whose
//! last accepted sample of an owed metal is older than its interval raises `overdue` through
//! the outbox, once per period, and `overdue_cleared` once sampled again).
//!
//! The rules are pure ([`crate::domain::obligation`]); the state and the events live in the
//! database ([`crate::store::network`]); this module only keeps the clock.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::obligation::Obligations;
use crate::mqtt::sleep_or_cancel;
use crate::store;
use crate::telemetry;

/// Checks for overdue points every `network.overdue_check_secs` until shutdown (the first
/// check right away). A failed check is logged and retried at the next tick; the publisher
/// is woken when events were queued.
pub async fn run_overdue_check(
    settings: Arc<Settings>,
    obligations: Arc<Obligations>,
    pool: Pool,
    outbox: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_secs(settings.network.overdue_check_secs.max(1));
    loop {
        let result = match pool.get().await {
            Ok(mut client) => {
                store::network::check_overdue(&mut client, &obligations, &settings.mqtt, Utc::now())
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(r) => {
                telemetry::overdue_checked(r.overdue, r.raised, r.cleared);
                if r.raised + r.cleared > 0 {
                    outbox.notify_one();
                }
            }
            Err(e) => telemetry::overdue_check_failed(&e),
        }
        if !sleep_or_cancel(every, &shutdown).await {
            return;
        }
    }
}
