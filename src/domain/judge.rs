//! Judging one reading against the thresholds that apply, and a farmland point's soil tier.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

use super::metal::Metal;
use super::point::{LandUse, Point};
use super::standard::{Standards, Thresholds};

/// Outcome of judging one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// At or below the screening value (equality never exceeds).
    None,
    /// Above the screening value, at or below the intervention value (or no intervention value).
    Screening,
    /// Above the intervention value.
    Intervention,
    /// Below the detection limit, but the detection limit is above the screening value.
    Undeterminable,
    /// No threshold for this metal on this land (e.g. Zn or total Cr on development land).
    NoStandard,
}

impl Level {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Screening => "screening",
            Level::Intervention => "intervention",
            Level::Undeterminable => "undeterminable",
            Level::NoStandard => "no_standard",
        }
    }

    /// True for screening and intervention exceedances.
    pub fn exceeds(self) -> bool {
        matches!(self, Level::Screening | Level::Intervention)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A judgement with the thresholds it used (absent for `no_standard`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// The outcome.
    pub level: Level,
    /// Thresholds used, with standard, column, pH band and table references: shared with the
    /// standards table (a reference count, no copy of the provenance strings). Read it as
    /// `Option<&Thresholds>` with `.as_deref()`; it serialises as the thresholds themselves.
    #[serde(serialize_with = "serialize_shared")]
    pub thresholds: Option<Arc<Thresholds>>,
}

/// Serialises shared thresholds as the thresholds themselves.
fn serialize_shared<S: Serializer>(
    t: &Option<Arc<Thresholds>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    t.as_deref().serialize(serializer)
}

/// Judges one reading. `value_mgkg` is the measured value, or the detection limit when
/// `detected` is false.
pub fn judge(
    standards: &Standards,
    land_use: LandUse,
    ph: Option<f64>,
    metal: Metal,
    value_mgkg: f64,
    detected: bool,
) -> Judgement {
    let Some(t) = standards.shared_thresholds(land_use, ph, metal) else {
        return Judgement {
            level: Level::NoStandard,
            thresholds: None,
        };
    };
    let level = if !detected {
        // Below the MDL: a pass only if the MDL itself is at or below the screening value.
        if value_mgkg <= t.screening {
            Level::None
        } else {
            Level::Undeterminable
        }
    } else if value_mgkg <= t.screening {
        Level::None
    } else {
        match t.intervention {
            Some(i) if value_mgkg > i => Level::Intervention,
            _ => Level::Screening,
        }
    };
    Judgement {
        level,
        thresholds: Some(Arc::clone(t)),
    }
}

/// The pH a reading taken at `point` is judged at: the sample's own when measured, else the
/// point's registered pH. The same rule for station messages and lab rows.
pub fn judging_ph(sample_ph: Option<f64>, point: &Point) -> Option<f64> {
    sample_ph.or(point.ph)
}

/// Judges one reading taken at `point`: by the point's land use, at [`judging_ph`]. This is
/// the judgement of a judged reading, whatever its source.
pub fn judge_at_point(
    standards: &Standards,
    point: &Point,
    sample_ph: Option<f64>,
    metal: Metal,
    value_mgkg: f64,
    detected: bool,
) -> Judgement {
    judge(
        standards,
        point.land_use,
        judging_ph(sample_ph, point),
        metal,
        value_mgkg,
        detected,
    )
}

/// GB 15618 farmland category from soil data alone (the legal category also needs crop
/// co-monitoring; this is the soil screening tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SoilTier {
    /// 优先保护类: every metal at or below screening.
    PriorityProtection,
    /// 安全利用类: some metal above screening, none above intervention.
    SafeUtilisation,
    /// 严格管控类: some metal above intervention.
    StrictControl,
    /// Not decidable: no exceedance, but some metal is undeterminable (MDL above screening).
    Undeterminable,
}

impl SoilTier {
    /// The wire and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SoilTier::PriorityProtection => "priority_protection",
            SoilTier::SafeUtilisation => "safe_utilisation",
            SoilTier::StrictControl => "strict_control",
            SoilTier::Undeterminable => "undeterminable",
        }
    }
}

/// The soil tier of a farmland point from the latest level of each metal.
pub fn soil_tier(latest_levels: &[Level]) -> SoilTier {
    if latest_levels.contains(&Level::Intervention) {
        SoilTier::StrictControl
    } else if latest_levels.contains(&Level::Screening) {
        SoilTier::SafeUtilisation
    } else if latest_levels.contains(&Level::Undeterminable) {
        SoilTier::Undeterminable
    } else {
        SoilTier::PriorityProtection
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_ph_wins_over_the_points() {
        use crate::domain::point::PointType;
        let point = Point {
            id: "P1".into(),
            name: "p".into(),
            county_code: "441781".into(),
            lon: 111.0,
            lat: 22.0,
            point_type: PointType::Basic,
            land_use: LandUse::Paddy,
            ph: Some(6.2),
        };
        assert_eq!(judging_ph(Some(7.5), &point), Some(7.5));
        assert_eq!(judging_ph(None, &point), Some(6.2));
        let unmeasured = Point { ph: None, ..point };
        assert_eq!(judging_ph(None, &unmeasured), None);
    }

    #[test]
    fn tier_takes_the_worst_level() {
        use Level::*;
        assert_eq!(soil_tier(&[None, None]), SoilTier::PriorityProtection);
        assert_eq!(soil_tier(&[None, Screening]), SoilTier::SafeUtilisation);
        assert_eq!(
            soil_tier(&[Screening, Intervention]),
            SoilTier::StrictControl
        );
        assert_eq!(soil_tier(&[None, Undeterminable]), SoilTier::Undeterminable);
        assert_eq!(
            soil_tier(&[Undeterminable, Screening]),
            SoilTier::SafeUtilisation
        );
        assert_eq!(soil_tier(&[NoStandard]), SoilTier::PriorityProtection);
    }
}
