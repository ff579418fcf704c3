//! Snapshots of derived data that readers need fast: today the soil tier of every farmland
//! point (`point_soil_tiers_snapshot`, schema 21), read by the console's map and point pages
//! and the public disclosure page instead of the exact view `point_soil_tiers`, which
//! computes every farmland point's tier each time it is read (by index probes per point and
//! metal since schema 28; before, by a scan of every reading).

use std::time::Duration;

use deadpool_postgres::Client;

use super::StoreError;

/// Refreshes the tier snapshot if a sample was stored since its last refresh, or that refresh
/// is older than `max_age`, and no other session is refreshing it. Returns whether it did.
pub async fn refresh_tiers(client: &Client, max_age: Duration) -> Result<bool, StoreError> {
    let secs = max_age.as_secs_f64();
    let row = client
        .query_one(
            "SELECT refresh_point_soil_tiers(make_interval(secs => $1))",
            &[&secs],
        )
        .await?;
    Ok(row.get(0))
}
