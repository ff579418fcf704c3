//! Monitoring points: where a sample was taken, what the land is used for, and its pH.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Kind of monitoring point (点位类型).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointType {
    /// Basic point 基础点位.
    Basic,
    /// Risk point 风险点位 (around key enterprises, parks, tailings ponds, landfills).
    Risk,
    /// Background point 背景点位.
    Background,
}

impl PointType {
    /// Parses the registry spelling (`basic`, `risk`, `background`) or the Chinese name.
    pub fn parse(text: &str) -> Option<PointType> {
        match text.trim().to_ascii_lowercase().as_str() {
            "basic" | "基础点位" | "基础" => Some(PointType::Basic),
            "risk" | "风险点位" | "风险" => Some(PointType::Risk),
            "background" | "背景点位" | "背景" => Some(PointType::Background),
            _ => None,
        }
    }

    /// The registry spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PointType::Basic => "basic",
            PointType::Risk => "risk",
            PointType::Background => "background",
        }
    }
}

/// Land use of a point, which selects the standard and the threshold column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandUse {
    /// Paddy 水田 (rice, lotus).
    Paddy,
    /// Dry land 旱地.
    DryLand,
    /// Irrigated land 水浇地.
    Irrigated,
    /// Vegetable field 菜地.
    Vegetable,
    /// Orchard 果园 (its own Cu column in GB 15618).
    Orchard,
    /// Tea garden 茶园.
    Tea,
    /// Grassland 草地.
    Grassland,
    /// Paddy–upland rotation 水旱轮作.
    PaddyUplandRotation,
    /// Development land, first class (GB 36600 第一类用地: housing, schools, hospitals, parks).
    DevelopmentFirst,
    /// Development land, second class (GB 36600 第二类用地: industry, logistics, roads).
    DevelopmentSecond,
}

impl LandUse {
    /// Every land use, in a fixed order.
    pub const ALL: [LandUse; 10] = [
        LandUse::Paddy,
        LandUse::DryLand,
        LandUse::Irrigated,
        LandUse::Vegetable,
        LandUse::Orchard,
        LandUse::Tea,
        LandUse::Grassland,
        LandUse::PaddyUplandRotation,
        LandUse::DevelopmentFirst,
        LandUse::DevelopmentSecond,
    ];

    /// Parses the registry spelling (`paddy`, `dry_land`, …) or the Chinese name.
    pub fn parse(text: &str) -> Option<LandUse> {
        let t = text.trim().to_ascii_lowercase().replace('-', "_");
        LandUse::ALL
            .into_iter()
            .find(|l| l.as_str() == t || l.chinese() == t)
    }

    /// The registry spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LandUse::Paddy => "paddy",
            LandUse::DryLand => "dry_land",
            LandUse::Irrigated => "irrigated",
            LandUse::Vegetable => "vegetable",
            LandUse::Orchard => "orchard",
            LandUse::Tea => "tea",
            LandUse::Grassland => "grassland",
            LandUse::PaddyUplandRotation => "paddy_upland_rotation",
            LandUse::DevelopmentFirst => "development_first",
            LandUse::DevelopmentSecond => "development_second",
        }
    }

    /// The Chinese name, accepted as an alias.
    pub fn chinese(self) -> &'static str {
        match self {
            LandUse::Paddy => "水田",
            LandUse::DryLand => "旱地",
            LandUse::Irrigated => "水浇地",
            LandUse::Vegetable => "菜地",
            LandUse::Orchard => "果园",
            LandUse::Tea => "茶园",
            LandUse::Grassland => "草地",
            LandUse::PaddyUplandRotation => "水旱轮作",
            LandUse::DevelopmentFirst => "第一类用地",
            LandUse::DevelopmentSecond => "第二类用地",
        }
    }

    /// True for farmland (judged by GB 15618), false for development land (GB 36600).
    pub fn is_farmland(self) -> bool {
        !matches!(self, LandUse::DevelopmentFirst | LandUse::DevelopmentSecond)
    }
}

impl fmt::Display for LandUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered monitoring point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Point id, e.g. `441781-R-0003`.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// County-level code (GB/T 2260), e.g. `441781`; selects the alert topic.
    pub county_code: String,
    /// Longitude (WGS84, degrees).
    pub lon: f64,
    /// Latitude (WGS84, degrees).
    pub lat: f64,
    /// Kind of point.
    pub point_type: PointType,
    /// Land use.
    pub land_use: LandUse,
    /// Registered soil pH, used when a sample carries none.
    pub ph: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn land_use_round_trips_with_aliases() {
        for l in LandUse::ALL {
            assert_eq!(LandUse::parse(l.as_str()), Some(l));
            assert_eq!(LandUse::parse(l.chinese()), Some(l));
        }
        assert_eq!(LandUse::parse("Dry-Land"), Some(LandUse::DryLand));
        assert_eq!(LandUse::parse("forest"), None);
        assert!(LandUse::Tea.is_farmland());
        assert!(!LandUse::DevelopmentSecond.is_farmland());
    }
}
