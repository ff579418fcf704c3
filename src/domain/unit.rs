//! Concentration units seen in the field, and their conversion to mg/kg (dry weight).

use serde::{Deserialize, Serialize};

/// A mass-fraction unit. Everything is normalised to mg/kg; the original unit is kept with
/// the reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Unit {
    /// mg/kg, µg/g and ppm (all equal).
    MgPerKg,
    /// µg/kg and ppb.
    UgPerKg,
    /// g/kg.
    GPerKg,
}

impl Unit {
    /// Parses a unit as written by a station or lab (case-insensitive; `µ` (micro sign),
    /// `μ` (Greek mu) and `u` are all accepted).
    pub fn parse(text: &str) -> Option<Unit> {
        // The usual spelling without allocating (a station message has eight readings).
        if text.trim().eq_ignore_ascii_case("mg/kg") {
            return Some(Unit::MgPerKg);
        }
        let t = text.trim().to_lowercase().replace(['µ', 'μ'], "u");
        match t.as_str() {
            "mg/kg" | "ug/g" | "ppm" => Some(Unit::MgPerKg),
            "ug/kg" | "ppb" => Some(Unit::UgPerKg),
            "g/kg" => Some(Unit::GPerKg),
            _ => None,
        }
    }

    /// Multiplier from this unit to mg/kg.
    pub fn to_mg_per_kg(self) -> f64 {
        match self {
            Unit::MgPerKg => 1.0,
            Unit::UgPerKg => 0.001,
            Unit::GPerKg => 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_and_convert() {
        for (text, unit, factor) in [
            ("mg/kg", Unit::MgPerKg, 1.0),
            ("MG/KG", Unit::MgPerKg, 1.0),
            ("µg/g", Unit::MgPerKg, 1.0),
            ("μg/g", Unit::MgPerKg, 1.0),
            ("ug/g", Unit::MgPerKg, 1.0),
            ("ppm", Unit::MgPerKg, 1.0),
            ("µg/kg", Unit::UgPerKg, 0.001),
            ("ug/kg", Unit::UgPerKg, 0.001),
            ("ppb", Unit::UgPerKg, 0.001),
            ("g/kg", Unit::GPerKg, 1000.0),
        ] {
            let parsed = Unit::parse(text);
            assert_eq!(parsed, Some(unit), "{text}");
            assert_eq!(unit.to_mg_per_kg(), factor, "{text}");
        }
        assert_eq!(Unit::parse("mg/l"), None);
        assert_eq!(Unit::parse("%"), None);
    }
}
