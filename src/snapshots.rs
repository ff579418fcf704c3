//! Background refresh, inside `soilmon run`, of the snapshots readers need fast: the soil
//! tier of every farmland point, which the console's map and point pages and the public
//! disclosure page read instead of the exact view, which computes every point's tier each
//! time it is read (see [`crate::store::snapshots`]). The SQL decides whether anything
//! changed; this module only keeps the clock.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::mqtt::sleep_or_cancel;
use crate::store;
use crate::telemetry;

/// Refreshes the tier snapshot every `console.tiers_refresh_secs` until shutdown (the first
/// time right away). A failed refresh is logged and retried at the next tick.
pub async fn run_tier_refresh(settings: Arc<Settings>, pool: Pool, shutdown: CancellationToken) {
    let every = Duration::from_secs(settings.console.tiers_refresh_secs.max(1));
    let max_age = Duration::from_secs(settings.console.tiers_max_age_secs);
    loop {
        let started = std::time::Instant::now();
        let result = match pool.get().await {
            Ok(client) => store::snapshots::refresh_tiers(&client, max_age).await,
            Err(e) => Err(e.into()),
        };
        match result {
            Ok(refreshed) => telemetry::tiers_refreshed(refreshed, started.elapsed()),
            Err(e) => telemetry::tiers_refresh_failed(&e),
        }
        if !sleep_or_cancel(every, &shutdown).await {
            return;
        }
    }
}
