//! Threshold tables (GB 15618-2018, GB 36600-2018) as validated data.
//!
//! The numbers live in `config/standards/*.toml`, each row citing its table. This module parses
//! and checks them (every declared metal × column × pH band present, values positive and finite,
//! screening ≤ intervention) and answers "which thresholds apply to this land use, pH and
//! metal?". It does no I/O: the caller hands it the file text.
//!
//! Every answer is worked out once, when the set is built ([`Standards::from_standards`]), and
//! shared: judging a reading looks its thresholds up in a table and allocates nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::metal::Metal;
use super::point::LandUse;

/// Errors found while loading a standards file.
#[derive(Debug, thiserror::Error)]
pub enum StandardError {
    /// The TOML did not parse or did not have the expected shape.
    #[error("{origin}: {source}")]
    Parse {
        /// File the text came from.
        origin: String,
        /// Underlying parse error.
        source: toml::de::Error,
    },
    /// The file parsed but its content is inconsistent.
    #[error("{origin}: {detail}")]
    Invalid {
        /// File the text came from.
        origin: String,
        /// What is wrong.
        detail: String,
    },
    /// The set of files does not hold exactly one farmland and one development-land standard.
    #[error("standards set: {0}")]
    Set(String),
}

/// Which land a standard applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppliesTo {
    /// Agricultural land (GB 15618).
    Farmland,
    /// Development land (GB 36600).
    Development,
}

/// Threshold level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdLevel {
    /// Risk screening value 风险筛选值.
    Screening,
    /// Risk intervention value 风险管制值.
    Intervention,
}

/// How paddy–upland rotation land is judged under GB 15618.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationRule {
    /// Per metal and band, the lower of the paddy and "other" values.
    Stricter,
    /// Use the paddy column.
    Paddy,
    /// Use the "other" column.
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeader {
    id: String,
    version: String,
    applies_to: AppliesTo,
    title: String,
    ph_upper_bounds: Vec<f64>,
    metals: Vec<String>,
    intervention_metals: Vec<String>,
    screening_columns: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRow {
    metal: String,
    level: ThresholdLevel,
    column: String,
    source: String,
    values: Vec<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StandardFile {
    standard: FileHeader,
    threshold: Vec<FileRow>,
}

/// One threshold row: a metal, a level, a land-use column, one value per pH band.
#[derive(Debug, Clone)]
struct Row {
    values: Vec<f64>,
    source: String,
}

/// One loaded and validated standard.
#[derive(Debug, Clone)]
pub struct Standard {
    /// Standard number, e.g. `GB 15618-2018`.
    pub id: String,
    /// Version string stored with every judgement.
    pub version: String,
    /// Title.
    pub title: String,
    /// Which land it applies to.
    pub applies_to: AppliesTo,
    /// Inclusive upper bounds of the pH bands (empty: not pH-dependent).
    pub ph_upper_bounds: Vec<f64>,
    rows: HashMap<(Metal, ThresholdLevel, String), Row>,
}

/// A pH band of a pH-dependent standard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhBand {
    /// Index into the standard's bands (0 = most acid).
    pub index: usize,
    /// Lower bound (exclusive), if any.
    pub lower: Option<f64>,
    /// Upper bound (inclusive), if any.
    pub upper: Option<f64>,
}

impl fmt::Display for PhBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.lower, self.upper) {
            (None, Some(u)) => write!(f, "pH<={u}"),
            (Some(l), Some(u)) => write!(f, "{l}<pH<={u}"),
            (Some(l), None) => write!(f, "pH>{l}"),
            (None, None) => write!(f, "any pH"),
        }
    }
}

/// The thresholds that apply to one metal on one piece of land, with where they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thresholds {
    /// Standard number.
    pub standard_id: String,
    /// Standard version.
    pub standard_version: String,
    /// Land-use column used (`paddy`, `other`, `orchard`, `all`, `paddy+other` for rotation,
    /// `first`, `second`).
    pub column: String,
    /// Table reference of the screening value.
    pub screening_source: String,
    /// Risk screening value, mg/kg.
    pub screening: f64,
    /// Table reference of the intervention value, if any.
    pub intervention_source: Option<String>,
    /// Risk intervention value, mg/kg (absent for Cu, Ni, Zn on farmland).
    pub intervention: Option<f64>,
    /// pH band used (pH-dependent standards only).
    pub ph_band: Option<PhBand>,
    /// True when the sample and point had no pH and the strictest band was used.
    pub ph_assumed: bool,
}

const FARMLAND_COLUMNS: [&str; 4] = ["paddy", "other", "orchard", "all"];
const DEVELOPMENT_COLUMNS: [&str; 2] = ["first", "second"];

impl Standard {
    /// Parses and validates one standards file. `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Standard, StandardError> {
        let invalid = |detail: String| StandardError::Invalid {
            origin: origin.to_string(),
            detail,
        };
        let file: StandardFile = toml::from_str(text).map_err(|source| StandardError::Parse {
            origin: origin.to_string(),
            source,
        })?;
        let h = file.standard;
        let bounds = &h.ph_upper_bounds;
        if bounds.windows(2).any(|w| w[0] >= w[1]) || bounds.iter().any(|b| !b.is_finite()) {
            return Err(invalid(
                "ph_upper_bounds must be finite and increasing".into(),
            ));
        }
        let bands = bounds.len() + 1;
        let columns: &[&str] = match h.applies_to {
            AppliesTo::Farmland => &FARMLAND_COLUMNS,
            AppliesTo::Development => &DEVELOPMENT_COLUMNS,
        };
        let mut rows = HashMap::new();
        for r in file.threshold {
            let metal = Metal::parse(&r.metal)
                .ok_or_else(|| invalid(format!("unknown metal {:?}", r.metal)))?;
            if !columns.contains(&r.column.as_str()) {
                return Err(invalid(format!(
                    "{metal}: column {:?} is not one of {columns:?}",
                    r.column
                )));
            }
            if r.values.len() != bands {
                return Err(invalid(format!(
                    "{metal} {:?} {}: {} values for {bands} pH bands",
                    r.level,
                    r.column,
                    r.values.len()
                )));
            }
            if r.values.iter().any(|v| !v.is_finite() || *v <= 0.0) {
                return Err(invalid(format!(
                    "{metal}: values must be positive and finite"
                )));
            }
            let key = (metal, r.level, r.column.clone());
            let row = Row {
                values: r.values,
                source: r.source,
            };
            if rows.insert(key, row).is_some() {
                return Err(invalid(format!(
                    "{metal} {:?} {}: duplicate row",
                    r.level, r.column
                )));
            }
        }
        let standard = Standard {
            id: h.id,
            version: h.version,
            title: h.title,
            applies_to: h.applies_to,
            ph_upper_bounds: h.ph_upper_bounds,
            rows,
        };
        standard.check_declared_columns(&h.screening_columns, origin)?;
        standard.check_coverage(&h.metals, &h.intervention_metals, origin)?;
        Ok(standard)
    }

    /// Checks the screening rows are exactly the declared (metal, column) pairs and every
    /// intervention row uses the column `all` (farmland) or a declared column (development).
    fn check_declared_columns(
        &self,
        declared: &BTreeMap<String, Vec<String>>,
        origin: &str,
    ) -> Result<(), StandardError> {
        let invalid = |detail: String| StandardError::Invalid {
            origin: origin.to_string(),
            detail,
        };
        let mut expected = BTreeSet::new();
        for (name, cols) in declared {
            let metal =
                Metal::parse(name).ok_or_else(|| invalid(format!("unknown metal {name:?}")))?;
            for c in cols {
                expected.insert((metal, c.clone()));
            }
        }
        let present: BTreeSet<(Metal, String)> = self
            .rows
            .keys()
            .filter(|k| k.1 == ThresholdLevel::Screening)
            .map(|k| (k.0, k.2.clone()))
            .collect();
        if let Some((m, c)) = expected.difference(&present).next() {
            return Err(invalid(format!(
                "{m}: declared screening column {c:?} has no row"
            )));
        }
        if let Some((m, c)) = present.difference(&expected).next() {
            return Err(invalid(format!(
                "{m}: screening row in undeclared column {c:?}"
            )));
        }
        for (m, level, c) in self.rows.keys() {
            let ok = match self.applies_to {
                AppliesTo::Farmland => c == "all",
                AppliesTo::Development => expected.contains(&(*m, c.clone())),
            };
            if *level == ThresholdLevel::Intervention && !ok {
                return Err(invalid(format!("{m}: intervention row in column {c:?}")));
            }
        }
        Ok(())
    }

    /// Checks every declared metal × land use × band resolves, and screening ≤ intervention.
    fn check_coverage(
        &self,
        metals: &[String],
        intervention_metals: &[String],
        origin: &str,
    ) -> Result<(), StandardError> {
        let invalid = |detail: String| StandardError::Invalid {
            origin: origin.to_string(),
            detail,
        };
        let parse_all = |names: &[String]| -> Result<BTreeSet<Metal>, StandardError> {
            names
                .iter()
                .map(|n| Metal::parse(n).ok_or_else(|| invalid(format!("unknown metal {n:?}"))))
                .collect()
        };
        let metals = parse_all(metals)?;
        let with_intervention = parse_all(intervention_metals)?;
        let present: BTreeSet<Metal> = self.rows.keys().map(|k| k.0).collect();
        if let Some(extra) = present.difference(&metals).next() {
            return Err(invalid(format!(
                "{extra} has rows but is not declared in metals"
            )));
        }
        let land_uses = LandUse::ALL
            .into_iter()
            .filter(|l| l.is_farmland() == (self.applies_to == AppliesTo::Farmland));
        for land_use in land_uses {
            for metal in &metals {
                for band in 0..=self.ph_upper_bounds.len() {
                    let Some(t) = self.lookup(land_use, *metal, band, RotationRule::Stricter)
                    else {
                        return Err(invalid(format!(
                            "{metal}: no screening value for {land_use} in band {band}"
                        )));
                    };
                    match (t.intervention, with_intervention.contains(metal)) {
                        (None, true) => {
                            return Err(invalid(format!(
                                "{metal}: no intervention value for {land_use} in band {band}"
                            )))
                        }
                        (Some(_), false) => {
                            return Err(invalid(format!(
                                "{metal}: intervention value present but not declared"
                            )))
                        }
                        (Some(i), true) if i < t.screening => {
                            return Err(invalid(format!(
                                "{metal} {land_use} band {band}: screening {} > intervention {i}",
                                t.screening
                            )))
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The pH band a pH value falls in (bounds inclusive above: pH 6.5 is in `5.5<pH<=6.5`).
    pub fn band_of(&self, ph: f64) -> PhBand {
        let index = self
            .ph_upper_bounds
            .iter()
            .position(|b| ph <= *b)
            .unwrap_or(self.ph_upper_bounds.len());
        self.band(index)
    }

    fn band(&self, index: usize) -> PhBand {
        PhBand {
            index,
            lower: index.checked_sub(1).map(|i| self.ph_upper_bounds[i]),
            upper: self.ph_upper_bounds.get(index).copied(),
        }
    }

    /// The single row for a metal/level/land use under this standard, as (column, value, source).
    fn row_for(
        &self,
        metal: Metal,
        level: ThresholdLevel,
        land_use: LandUse,
        band: usize,
        rotation: RotationRule,
    ) -> Option<(String, f64, String)> {
        let get = |col: &str| {
            self.rows
                .get(&(metal, level, col.to_string()))
                .map(|r| (col.to_string(), r.values[band], r.source.clone()))
        };
        let first_of = |cols: &[&str]| cols.iter().find_map(|c| get(c));
        match land_use {
            LandUse::Paddy => first_of(&["paddy", "other", "all"]),
            LandUse::Orchard => first_of(&["orchard", "other", "all"]),
            LandUse::PaddyUplandRotation => {
                let paddy = first_of(&["paddy", "other", "all"]);
                let other = first_of(&["other", "all"]);
                match rotation {
                    RotationRule::Paddy => paddy,
                    RotationRule::Other => other,
                    RotationRule::Stricter => match (paddy, other) {
                        (Some(p), Some(o)) if p.0 == o.0 => Some(p),
                        (Some(p), Some(o)) => {
                            let (_, v, src) = if o.1 < p.1 { o } else { p };
                            Some(("paddy+other".to_string(), v, src))
                        }
                        (p, o) => p.or(o),
                    },
                }
            }
            LandUse::DevelopmentFirst => first_of(&["first"]),
            LandUse::DevelopmentSecond => first_of(&["second"]),
            _ => first_of(&["other", "all"]),
        }
    }

    /// Thresholds for a metal on a land use in a given pH band, or `None` when the standard has
    /// no screening value for it (e.g. Zn on development land).
    pub fn lookup(
        &self,
        land_use: LandUse,
        metal: Metal,
        band: usize,
        rotation: RotationRule,
    ) -> Option<Thresholds> {
        let (column, screening, screening_source) =
            self.row_for(metal, ThresholdLevel::Screening, land_use, band, rotation)?;
        let intervention = self.row_for(
            metal,
            ThresholdLevel::Intervention,
            land_use,
            band,
            rotation,
        );
        let banded = !self.ph_upper_bounds.is_empty();
        Some(Thresholds {
            standard_id: self.id.clone(),
            standard_version: self.version.clone(),
            column,
            screening_source,
            screening,
            intervention_source: intervention.as_ref().map(|i| i.2.clone()),
            intervention: intervention.map(|i| i.1),
            ph_band: banded.then(|| self.band(band)),
            ph_assumed: false,
        })
    }

    /// The band with the lowest screening value for this metal and land use (ties: the most
    /// acid band), used when no pH is known.
    pub fn strictest_band(&self, land_use: LandUse, metal: Metal, rotation: RotationRule) -> usize {
        (0..=self.ph_upper_bounds.len())
            .filter_map(|b| {
                self.lookup(land_use, metal, b, rotation)
                    .map(|t| (b, t.screening))
            })
            .fold(None, |best: Option<(usize, f64)>, (b, v)| match best {
                Some((_, bv)) if bv <= v => best,
                _ => Some((b, v)),
            })
            .map_or(0, |(b, _)| b)
    }
}

/// The farmland and development-land standards in force.
///
/// Built by [`Standards::from_standards`], which also works out every answer of
/// [`Standards::thresholds`]; the fields are read-only in spirit (changing one would not
/// change the answers: build a new set instead).
#[derive(Debug, Clone)]
pub struct Standards {
    /// GB 15618 (or its successor).
    pub farmland: Standard,
    /// GB 36600 (or its successor).
    pub development: Standard,
    /// How rotation land is judged.
    pub rotation: RotationRule,
    /// The answers, one slot per land use × metal (see [`slot_index`]).
    table: Vec<Slot>,
}

/// The thresholds of one land use × metal, in every case the lookup distinguishes.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// By pH band index (one entry when the standard is not pH-dependent); `None`: no standard.
    by_band: Vec<Option<Arc<Thresholds>>>,
    /// With no pH known: the strictest band, `ph_assumed` set (pH-dependent standards only).
    no_ph: Option<Arc<Thresholds>>,
}

/// Where a land use × metal lives in [`Standards`]' table.
fn slot_index(land_use: LandUse, metal: Metal) -> usize {
    land_use as usize * Metal::ALL.len() + metal as usize
}

impl Standards {
    /// Builds the set from loaded files: exactly one per land kind.
    pub fn from_standards(
        list: Vec<Standard>,
        rotation: RotationRule,
    ) -> Result<Standards, StandardError> {
        let mut farmland = None;
        let mut development = None;
        for s in list {
            let slot = match s.applies_to {
                AppliesTo::Farmland => &mut farmland,
                AppliesTo::Development => &mut development,
            };
            if let Some(prev) = slot.replace(s) {
                return Err(StandardError::Set(format!(
                    "two standards for {:?} land ({})",
                    prev.applies_to, prev.id
                )));
            }
        }
        match (farmland, development) {
            (Some(farmland), Some(development)) => {
                let mut standards = Standards {
                    farmland,
                    development,
                    rotation,
                    table: Vec::new(),
                };
                standards.table = standards.build_table();
                Ok(standards)
            }
            _ => Err(StandardError::Set(
                "need one farmland and one development-land standard".into(),
            )),
        }
    }

    /// The standard that governs a land use.
    pub fn for_land_use(&self, land_use: LandUse) -> &Standard {
        if land_use.is_farmland() {
            &self.farmland
        } else {
            &self.development
        }
    }

    /// Works out the thresholds of every land use × metal × pH band, and of no pH.
    fn build_table(&self) -> Vec<Slot> {
        let mut table = vec![Slot::default(); LandUse::ALL.len() * Metal::ALL.len()];
        for land_use in LandUse::ALL {
            let std = self.for_land_use(land_use);
            for metal in Metal::ALL {
                let by_band = (0..=std.ph_upper_bounds.len())
                    .map(|band| {
                        std.lookup(land_use, metal, band, self.rotation)
                            .map(Arc::new)
                    })
                    .collect();
                let no_ph = if std.ph_upper_bounds.is_empty() {
                    None
                } else {
                    let band = std.strictest_band(land_use, metal, self.rotation);
                    std.lookup(land_use, metal, band, self.rotation).map(|t| {
                        Arc::new(Thresholds {
                            ph_assumed: true,
                            ..t
                        })
                    })
                };
                table[slot_index(land_use, metal)] = Slot { by_band, no_ph };
            }
        }
        table
    }

    /// The shared thresholds for a metal on a land use at a pH, from the table built at load:
    /// no allocation. With no pH, the strictest band is used and `ph_assumed` set. `None`: no
    /// applicable standard.
    pub fn shared_thresholds(
        &self,
        land_use: LandUse,
        ph: Option<f64>,
        metal: Metal,
    ) -> Option<&Arc<Thresholds>> {
        let slot = self.table.get(slot_index(land_use, metal))?;
        let std = self.for_land_use(land_use);
        let found = if std.ph_upper_bounds.is_empty() {
            slot.by_band.first()
        } else {
            match ph {
                Some(ph) => slot.by_band.get(std.band_of(ph).index),
                None => return slot.no_ph.as_ref(),
            }
        };
        found?.as_ref()
    }

    /// Thresholds for a metal on a land use at a pH, as an owned copy of
    /// [`Standards::shared_thresholds`]; with no pH, the strictest band is used and
    /// `ph_assumed` set. `None`: no applicable standard.
    pub fn thresholds(
        &self,
        land_use: LandUse,
        ph: Option<f64>,
        metal: Metal,
    ) -> Option<Thresholds> {
        self.shared_thresholds(land_use, ph, metal)
            .map(|t| Thresholds::clone(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_land_use_and_metal_has_its_own_slot() {
        let mut seen = BTreeSet::new();
        for land_use in LandUse::ALL {
            for metal in Metal::ALL {
                let i = slot_index(land_use, metal);
                assert!(
                    i < LandUse::ALL.len() * Metal::ALL.len(),
                    "{land_use} {metal}"
                );
                assert!(seen.insert(i), "{land_use} {metal} shares slot {i}");
            }
        }
    }
}
