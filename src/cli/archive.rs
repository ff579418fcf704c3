//! `soilmon verify` and `soilmon correct`: the tamper-evident archive.

use anyhow::{bail, Context as _, Result};

use soilmon::config::Settings;
use soilmon::domain::metal::Metal;
use soilmon::store;

use super::{admin_connect, connect};

#[derive(clap::Args)]
pub struct CorrectArgs {
    /// Monitoring point.
    #[arg(long)]
    pub point: String,
    /// Metal symbol.
    #[arg(long)]
    pub metal: String,
    /// Sampling time of the reading (RFC 3339).
    #[arg(long)]
    pub sampled_at: String,
    /// Station id or lab batch id, if several readings match.
    #[arg(long)]
    pub source_id: Option<String>,
    /// msg_id or sample id, if several readings match.
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Corrected value, mg/kg.
    #[arg(long)]
    pub value: f64,
    /// Why (recorded).
    #[arg(long)]
    pub reason: String,
    /// Who (recorded).
    #[arg(long)]
    pub by: String,
}

/// Parses `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_date(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(d.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// Recomputes the chain from `from` on; exits 1 at the first broken link.
pub async fn verify(settings: &Settings, from: Option<&str>) -> Result<()> {
    let from = from.map(parse_date).transpose()?;
    let mut client = connect(settings).await?;
    let report = store::archive::verify(&mut client, from).await?;
    match &report.broken {
        None => {
            println!(
                "archive OK: {} entries, {} readings verified; head seq {} hash {}",
                report.entries, report.readings, report.last_seq, report.last_hash
            );
            Ok(())
        }
        Some(b) => {
            println!(
                "archive BROKEN after {} verified entries: {b}",
                report.entries
            );
            std::process::exit(1);
        }
    }
}

/// Corrects one stored reading and prints the archive entry that records it.
pub async fn correct(settings: &Settings, a: &CorrectArgs) -> Result<()> {
    let standards = settings.standards()?;
    let Some(metal) = Metal::parse(&a.metal) else {
        bail!("unknown metal {:?}", a.metal);
    };
    let sampled_at = chrono::DateTime::parse_from_rfc3339(&a.sampled_at)
        .with_context(|| format!("--sampled-at {:?} is not RFC 3339", a.sampled_at))?
        .with_timezone(&chrono::Utc);
    let mut client = admin_connect(settings).await?;
    let req = store::archive::CorrectionRequest {
        point_id: a.point.clone(),
        metal,
        sampled_at,
        source_id: a.source_id.clone(),
        msg_id: a.msg_id.clone(),
        value_mgkg: a.value,
        reason: a.reason.clone(),
        by: a.by.clone(),
    };
    let (c, entry) = store::archive::correct(&mut client, &standards, &req).await?;
    println!(
        "corrected {} {} at point {} ({}/{}): {} -> {} mg/kg, level {} -> {}; archive entry {}",
        c.new.metal,
        c.new.msg_id,
        c.new.point_id,
        c.source,
        c.source_id,
        c.old.value_mgkg,
        c.new.value_mgkg,
        c.old.level,
        c.new.level,
        entry.seq
    );
    Ok(())
}
