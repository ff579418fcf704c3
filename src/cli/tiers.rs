//! `soilmon tiers`: the soil screening tier of each farmland point (soil only).

use anyhow::Result;

use soilmon::config::Settings;
use soilmon::store::queries;

use super::{connect, write_lines};

/// Prints one line per farmland point: id, tier, metals seen, newest sample.
pub async fn tiers(settings: &Settings) -> Result<()> {
    let client = connect(settings).await?;
    let rows = queries::soil_tiers(&client).await?;
    let mut out = std::io::stdout().lock();
    let mut lines = vec![
        "soil screening tier per farmland point (soil only: the legal category also needs crop co-monitoring)".to_string(),
    ];
    for r in rows {
        lines.push(format!(
            "{}\t{}\t{} metals\tlatest {}",
            r.point_id, r.tier, r.metals_seen, r.latest_sample
        ));
    }
    write_lines(&mut out, &lines)
}
