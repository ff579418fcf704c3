//! `soilmon classify`: judge one value by hand and print the thresholds used.

use anyhow::{bail, Result};

use soilmon::config::Settings;
use soilmon::domain::judge::judge;
use soilmon::domain::metal::Metal;
use soilmon::domain::point::LandUse;
use soilmon::domain::unit::Unit;

#[derive(clap::Args)]
pub struct ClassifyArgs {
    /// Land use: paddy, dry_land, irrigated, vegetable, orchard, tea, grassland,
    /// paddy_upland_rotation, development_first, development_second (or the Chinese name).
    #[arg(long)]
    pub land_use: String,
    /// Soil pH; omit to judge with the strictest band (reported as assumed).
    #[arg(long)]
    pub ph: Option<f64>,
    /// Metal symbol or Chinese name (Pb Hg Cd Cr Cr6 As Cu Zn Ni).
    #[arg(long)]
    pub metal: String,
    /// Measured value (or the detection limit with --not-detected).
    #[arg(long, allow_negative_numbers = true)]
    pub value: f64,
    /// Unit of the value.
    #[arg(long, default_value = "mg/kg")]
    pub unit: String,
    /// The value is a detection limit: the analyte was not detected.
    #[arg(long)]
    pub not_detected: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Judges the value and prints the level and thresholds (text or JSON).
pub fn classify(settings: &Settings, a: &ClassifyArgs) -> Result<()> {
    let standards = settings.standards()?;
    let Some(land_use) = LandUse::parse(&a.land_use) else {
        bail!("unknown land use {:?}", a.land_use);
    };
    let Some(metal) = Metal::parse(&a.metal) else {
        bail!("unknown metal {:?}", a.metal);
    };
    let Some(unit) = Unit::parse(&a.unit) else {
        bail!("unknown unit {:?}", a.unit);
    };
    if !a.value.is_finite() || a.value < 0.0 {
        bail!("value must be a finite, non-negative number");
    }
    if let Some(ph) = a.ph {
        if !(0.0..=14.0).contains(&ph) {
            bail!("ph must be within 0-14");
        }
    }
    let value = a.value * unit.to_mg_per_kg();
    let j = judge(&standards, land_use, a.ph, metal, value, !a.not_detected);
    if a.json {
        let out = serde_json::json!({
            "land_use": land_use, "ph": a.ph, "metal": metal, "value_mgkg": value,
            "detected": !a.not_detected, "level": j.level, "thresholds": j.thresholds.as_deref(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{metal} {value} mg/kg on {land_use} → {}", j.level);
    match &j.thresholds {
        None => println!("  no applicable standard for {metal} on {land_use}"),
        Some(t) => {
            println!("  standard   {} ({})", t.standard_id, t.standard_version);
            println!("  column     {}", t.column);
            if let Some(b) = t.ph_band {
                let note = if t.ph_assumed {
                    " (no pH given: strictest band assumed)"
                } else {
                    ""
                };
                println!("  pH band    {b}{note}");
            }
            println!(
                "  screening  {} mg/kg  [{}]",
                t.screening, t.screening_source
            );
            match (t.intervention, &t.intervention_source) {
                (Some(i), Some(src)) => println!("  intervention {i} mg/kg  [{src}]"),
                _ => println!("  intervention none (cannot reach strict control)"),
            }
        }
    }
    if land_use.is_farmland() {
        println!("  note: soil-only screening; the legal farmland category also needs crop co-monitoring");
    }
    Ok(())
}
