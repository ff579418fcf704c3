//! Monitoring obligations (which points must be sampled how often, for which metals) as
//! validated data, and the pure rules built on them: which obligations a point is under,
//! which of its metals are overdue at a given time, and the coverage of the network.
//!
//! The file format is documented in `config/obligations/yangjiang.toml`. Nothing here does
//! I/O: the caller hands in the points, their last sample times and the clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::metal::Metal;
use super::point::{LandUse, Point, PointType};

/// Why an obligations file (or a registry's program list) was refused. Each variant has a
/// stable reason code ([`ObligationError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObligationError {
    /// The file cannot be read.
    #[error("unreadable_obligations: {0}")]
    Unreadable(String),
    /// The TOML does not parse into the expected shape.
    #[error("malformed_obligations: {0}")]
    Malformed(String),
    /// An obligation (or a registry row) names a program the file does not declare.
    #[error("unknown_program: {0:?} is not a declared [[program]]")]
    UnknownProgram(String),
    /// Two programs share an id.
    #[error("duplicate_program: {0:?} is declared twice")]
    DuplicateProgram(String),
    /// An obligation's interval is zero days.
    #[error("zero_interval: the obligation of program {0:?} has interval_days = 0")]
    ZeroInterval(String),
    /// An obligation names no metal, or a metal soilmon does not know.
    #[error("unknown_metal: program {program:?}: {detail}")]
    UnknownMetal {
        /// The program of the obligation.
        program: String,
        /// What is wrong.
        detail: String,
    },
    /// A selector names an unknown point type, land use or county.
    #[error("bad_selector: program {program:?}: {detail}")]
    BadSelector {
        /// The program.
        program: String,
        /// What is wrong.
        detail: String,
    },
    /// A declared program has no obligation.
    #[error("program_without_obligation: {0:?} owes nothing; add an [[obligation]] or remove it")]
    ProgramWithoutObligation(String),
}

impl ObligationError {
    /// The reason code.
    pub fn code(&self) -> &'static str {
        match self {
            ObligationError::Unreadable(_) => "unreadable_obligations",
            ObligationError::Malformed(_) => "malformed_obligations",
            ObligationError::UnknownProgram(_) => "unknown_program",
            ObligationError::DuplicateProgram(_) => "duplicate_program",
            ObligationError::ZeroInterval(_) => "zero_interval",
            ObligationError::UnknownMetal { .. } => "unknown_metal",
            ObligationError::BadSelector { .. } => "bad_selector",
            ObligationError::ProgramWithoutObligation(_) => "program_without_obligation",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    id: String,
    version: String,
    source: String,
    coverage: CoverageFile,
    #[serde(default)]
    program: Vec<ProgramFile>,
    #[serde(default)]
    obligation: Vec<ObligationFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CoverageFile {
    required_point_types: Vec<String>,
    default_interval_days: u32,
    source: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramFile {
    id: String,
    name: String,
    source: String,
    select: Option<SelectFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectFile {
    #[serde(default)]
    counties: Vec<String>,
    #[serde(default)]
    point_types: Vec<String>,
    #[serde(default)]
    land_uses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ObligationFile {
    program: String,
    interval_days: u32,
    metals: Vec<String>,
    confirmed: bool,
    source: String,
}

/// Which points a program covers by their attributes (an empty list matches anything).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selector {
    /// County codes.
    pub counties: Vec<String>,
    /// Point types.
    pub point_types: Vec<PointType>,
    /// Land uses.
    pub land_uses: Vec<LandUse>,
}

impl Selector {
    /// Whether `point` matches every non-empty list.
    pub fn matches(&self, point: &Point) -> bool {
        (self.counties.is_empty() || self.counties.contains(&point.county_code))
            && (self.point_types.is_empty() || self.point_types.contains(&point.point_type))
            && (self.land_uses.is_empty() || self.land_uses.contains(&point.land_use))
    }
}

/// A monitoring program (a class of points).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Program {
    /// Stable id, used in the registry's `programs` column.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Where the program comes from.
    pub source: String,
    /// Points covered by attributes; `None`: only points that name the program.
    pub select: Option<Selector>,
}

/// What a program's points owe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Obligation {
    /// The program.
    pub program: String,
    /// Required sampling interval, days (at least 1).
    pub interval_days: u32,
    /// Metals that must be covered.
    pub metals: Vec<Metal>,
    /// Whether the interval is backed by the cited source (false: a local choice).
    pub confirmed: bool,
    /// Where the rule comes from.
    pub source: String,
}

/// The validated obligations file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Obligations {
    /// File id.
    pub id: String,
    /// File version (stored with every overdue event).
    pub version: String,
    /// Source of the whole file.
    pub source: String,
    /// Point types every county must have.
    pub required_point_types: Vec<PointType>,
    /// Coverage window of a point under no obligation, days.
    pub default_interval_days: u32,
    /// Source of the coverage rule.
    pub coverage_source: String,
    /// Declared programs.
    pub programs: Vec<Program>,
    /// Obligations, each of a declared program.
    pub obligations: Vec<Obligation>,
}

/// One metal a point owes, at the shortest interval among the obligations asking for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Owed {
    /// The metal.
    pub metal: Metal,
    /// Required interval, days.
    pub interval_days: u32,
    /// The program whose obligation sets that interval.
    pub program: String,
}

/// A metal of a point that is overdue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverdueMetal {
    /// The metal.
    pub metal: Metal,
    /// Newest accepted sample of the metal at the point, if any.
    pub last_sampled_at: Option<DateTime<Utc>>,
    /// When the next sample was due (last sample, or registration, + interval).
    pub due_at: DateTime<Utc>,
    /// Required interval, days.
    pub interval_days: u32,
    /// The program that requires it.
    pub program: String,
}

/// Parses `value` as a list of known items, naming the first unknown one.
fn parse_list<T>(
    program: &str,
    what: &str,
    items: &[String],
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ObligationError> {
    items
        .iter()
        .map(|s| {
            parse(s).ok_or_else(|| ObligationError::BadSelector {
                program: program.to_string(),
                detail: format!("unknown {what} {s:?}"),
            })
        })
        .collect()
}

impl Obligations {
    /// Parses and checks an obligations file. `counties` are the registry's county codes
    /// (a selector naming another county is refused).
    pub fn from_toml(text: &str, counties: &[String]) -> Result<Obligations, ObligationError> {
        let file: File =
            toml::from_str(text).map_err(|e| ObligationError::Malformed(e.to_string()))?;
        let mut programs = Vec::new();
        for p in file.program {
            if programs.iter().any(|q: &Program| q.id == p.id) {
                return Err(ObligationError::DuplicateProgram(p.id));
            }
            let select = match p.select {
                None => None,
                Some(s) => Some(Self::selector(&p.id, s, counties)?),
            };
            programs.push(Program {
                id: p.id,
                name: p.name,
                source: p.source,
                select,
            });
        }
        let obligations = file
            .obligation
            .into_iter()
            .map(|o| Self::obligation(o, &programs))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = programs
            .iter()
            .find(|p| !obligations.iter().any(|o| o.program == p.id))
        {
            return Err(ObligationError::ProgramWithoutObligation(p.id.clone()));
        }
        let c = file.coverage;
        if c.default_interval_days == 0 {
            return Err(ObligationError::ZeroInterval("[coverage] default".into()));
        }
        Ok(Obligations {
            id: file.id,
            version: file.version,
            source: file.source,
            required_point_types: parse_list(
                "[coverage]",
                "point type",
                &c.required_point_types,
                PointType::parse,
            )?,
            default_interval_days: c.default_interval_days,
            coverage_source: c.source,
            programs,
            obligations,
        })
    }

    fn selector(
        program: &str,
        s: SelectFile,
        counties: &[String],
    ) -> Result<Selector, ObligationError> {
        if let Some(c) = s.counties.iter().find(|c| !counties.contains(c)) {
            return Err(ObligationError::BadSelector {
                program: program.to_string(),
                detail: format!("county {c:?} is not in registry.counties"),
            });
        }
        Ok(Selector {
            counties: s.counties,
            point_types: parse_list(program, "point type", &s.point_types, PointType::parse)?,
            land_uses: parse_list(program, "land use", &s.land_uses, LandUse::parse)?,
        })
    }

    fn obligation(o: ObligationFile, programs: &[Program]) -> Result<Obligation, ObligationError> {
        if !programs.iter().any(|p| p.id == o.program) {
            return Err(ObligationError::UnknownProgram(o.program));
        }
        if o.interval_days == 0 {
            return Err(ObligationError::ZeroInterval(o.program));
        }
        let unknown = |detail: String| ObligationError::UnknownMetal {
            program: o.program.clone(),
            detail,
        };
        if o.metals.is_empty() {
            return Err(unknown("no metal listed".into()));
        }
        let metals = o
            .metals
            .iter()
            .map(|m| Metal::parse(m).ok_or_else(|| unknown(format!("{m:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Obligation {
            program: o.program.clone(),
            interval_days: o.interval_days,
            metals,
            confirmed: o.confirmed,
            source: o.source,
        })
    }

    /// Checks a registry row's explicit program list: every id must be declared.
    pub fn check_programs(&self, ids: &[String]) -> Result<(), ObligationError> {
        match ids
            .iter()
            .find(|id| !self.programs.iter().any(|p| &p.id == *id))
        {
            Some(id) => Err(ObligationError::UnknownProgram(id.clone())),
            None => Ok(()),
        }
    }

    /// The programs `point` is under: those it names, and those whose selector matches it.
    pub fn programs_of<'a>(&'a self, point: &Point, named: &[String]) -> Vec<&'a Program> {
        self.programs
            .iter()
            .filter(|p| {
                named.contains(&p.id) || p.select.as_ref().is_some_and(|s| s.matches(point))
            })
            .collect()
    }

    /// What `point` owes, per metal (the shortest interval wins; ties: the first program in
    /// file order), in metal order.
    pub fn owed(&self, point: &Point, named: &[String]) -> Vec<Owed> {
        let programs: Vec<&str> = self
            .programs_of(point, named)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        let mut best: BTreeMap<Metal, Owed> = BTreeMap::new();
        for o in self
            .obligations
            .iter()
            .filter(|o| programs.contains(&o.program.as_str()))
        {
            for &metal in &o.metals {
                let shorter = best
                    .get(&metal)
                    .map_or(true, |b| o.interval_days < b.interval_days);
                if shorter {
                    best.insert(
                        metal,
                        Owed {
                            metal,
                            interval_days: o.interval_days,
                            program: o.program.clone(),
                        },
                    );
                }
            }
        }
        best.into_values().collect()
    }

    /// The coverage window of `point`: its shortest owed interval, or the default.
    pub fn window_days(&self, point: &Point, named: &[String]) -> u32 {
        self.owed(point, named)
            .iter()
            .map(|o| o.interval_days)
            .min()
            .unwrap_or(self.default_interval_days)
    }
}

/// The overdue metals of a point at `now`. A metal is due `interval` after its last sample;
/// one never sampled is due `interval` after the point was registered. Due exactly at `now`
/// is not yet overdue.
pub fn overdue(
    owed: &[Owed],
    last: &HashMap<Metal, DateTime<Utc>>,
    registered_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<OverdueMetal> {
    owed.iter()
        .filter_map(|o| {
            let last_sampled_at = last.get(&o.metal).copied();
            let base = last_sampled_at.unwrap_or(registered_at);
            let due_at = base + Duration::days(i64::from(o.interval_days));
            (now > due_at).then(|| OverdueMetal {
                metal: o.metal,
                last_sampled_at,
                due_at,
                interval_days: o.interval_days,
                program: o.program.clone(),
            })
        })
        .collect()
}

/// The stored overdue state of a point (what the last check raised).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOverdue {
    /// When the next reminder is due while the point stays overdue.
    pub next_reminder_at: DateTime<Utc>,
}

/// What the periodic check must do for one point.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Raise `overdue` (first time, or a reminder one period later); store the state with
    /// this next reminder time.
    Raise {
        /// The point.
        point_id: String,
        /// Its overdue metals.
        metals: Vec<OverdueMetal>,
        /// False the first time, true for a reminder.
        reminder: bool,
        /// When to remind next: now + the shortest interval among the overdue metals.
        next_reminder_at: DateTime<Utc>,
    },
    /// Still overdue, nothing to raise this time; refresh the stored metal list.
    Keep {
        /// The point.
        point_id: String,
        /// Its overdue metals.
        metals: Vec<OverdueMetal>,
    },
    /// No longer overdue (a sample arrived, or the point left the registry): raise
    /// `overdue_cleared` and drop the state.
    Clear {
        /// The point.
        point_id: String,
    },
}

/// Compares what is overdue now (`current`, points with at least one overdue metal) with
/// the stored state: a point newly overdue is raised, one still overdue is reminded once per
/// period, one no longer overdue is cleared. Sorted by point id.
pub fn transitions(
    current: BTreeMap<String, Vec<OverdueMetal>>,
    stored: &HashMap<String, StoredOverdue>,
    now: DateTime<Utc>,
) -> Vec<Transition> {
    let mut out: Vec<Transition> = stored
        .keys()
        .filter(|id| !current.contains_key(*id))
        .map(|id| Transition::Clear {
            point_id: id.clone(),
        })
        .collect();
    for (point_id, metals) in current {
        let period = metals.iter().map(|m| m.interval_days).min().unwrap_or(1);
        let next_reminder_at = now + Duration::days(i64::from(period));
        match stored.get(&point_id) {
            None => out.push(Transition::Raise {
                point_id,
                metals,
                reminder: false,
                next_reminder_at,
            }),
            Some(s) if now >= s.next_reminder_at => out.push(Transition::Raise {
                point_id,
                metals,
                reminder: true,
                next_reminder_at,
            }),
            Some(_) => out.push(Transition::Keep { point_id, metals }),
        }
    }
    out.sort_by(|a, b| a.point_id().cmp(b.point_id()));
    out
}

impl Transition {
    /// The point concerned.
    pub fn point_id(&self) -> &str {
        match self {
            Transition::Raise { point_id, .. }
            | Transition::Keep { point_id, .. }
            | Transition::Clear { point_id } => point_id,
        }
    }
}

/// What the coverage report needs of one point.
#[derive(Debug, Clone)]
pub struct PointCoverage<'a> {
    /// The point.
    pub point: &'a Point,
    /// Its coverage window, days ([`Obligations::window_days`]).
    pub window_days: u32,
    /// Newest sample of any metal.
    pub last_sampled_at: Option<DateTime<Utc>>,
    /// Whether any owed metal is overdue.
    pub overdue: bool,
}

/// One cell of the coverage table: a county × point type × land use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CoverageCell {
    /// County code.
    pub county_code: String,
    /// Point type.
    pub point_type: String,
    /// Land use.
    pub land_use: String,
    /// Registered points.
    pub points: u32,
    /// Points with a sample within their window.
    pub sampled_in_window: u32,
    /// Points never sampled.
    pub never_sampled: u32,
    /// Points with an overdue metal.
    pub overdue: u32,
}

/// Per county: which required point types it lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountyCoverage {
    /// County code.
    pub county_code: String,
    /// Registered points.
    pub points: u32,
    /// Required point types with no point in the county.
    pub missing_point_types: Vec<String>,
    /// True when nothing is missing.
    pub complete: bool,
}

/// Whether a GB/T 2260 code is a county-level division: a prefecture (city) code ends in
/// `00` (441700 is Yangjiang city itself), so it owes no point types of its own; its points
/// still count in the cells.
pub fn is_county_level(code: &str) -> bool {
    !code.ends_with("00")
}

/// The coverage table (cells sorted by county, type, land use) and the per-county check over
/// the county-level codes of `counties` (a county with no point at all lacks every required
/// type; the city code is not checked, see [`is_county_level`]).
pub fn coverage(
    points: &[PointCoverage<'_>],
    counties: &[String],
    required: &[PointType],
    now: DateTime<Utc>,
) -> (Vec<CoverageCell>, Vec<CountyCoverage>) {
    let mut cells: BTreeMap<(String, &str, &str), CoverageCell> = BTreeMap::new();
    let mut types: HashMap<&str, HashSet<PointType>> = HashMap::new();
    for pc in points {
        let p = pc.point;
        types
            .entry(p.county_code.as_str())
            .or_default()
            .insert(p.point_type);
        let key = (
            p.county_code.clone(),
            p.point_type.as_str(),
            p.land_use.as_str(),
        );
        let cell = cells.entry(key).or_insert_with(|| CoverageCell {
            county_code: p.county_code.clone(),
            point_type: p.point_type.as_str().to_string(),
            land_use: p.land_use.as_str().to_string(),
            ..CoverageCell::default()
        });
        cell.points += 1;
        let window_start = now - Duration::days(i64::from(pc.window_days));
        match pc.last_sampled_at {
            None => cell.never_sampled += 1,
            Some(t) if t >= window_start => cell.sampled_in_window += 1,
            Some(_) => {}
        }
        cell.overdue += u32::from(pc.overdue);
    }
    let per_county = counties
        .iter()
        .filter(|c| is_county_level(c))
        .map(|c| {
            let have = types.get(c.as_str());
            let missing: Vec<String> = required
                .iter()
                .filter(|t| !have.is_some_and(|h| h.contains(t)))
                .map(|t| t.as_str().to_string())
                .collect();
            CountyCoverage {
                county_code: c.clone(),
                points: points.iter().filter(|p| &p.point.county_code == c).count() as u32,
                complete: missing.is_empty(),
                missing_point_types: missing,
            }
        })
        .collect();
    (cells.into_values().collect(), per_county)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counties() -> Vec<String> {
        ["441702", "441704", "441721", "441781"]
            .map(String::from)
            .to_vec()
    }

    fn shipped() -> Obligations {
        let text = include_str!("../../config/obligations/yangjiang.toml");
        Obligations::from_toml(text, &counties()).expect("the shipped file is valid")
    }

    fn point(id: &str, county: &str, t: PointType, l: LandUse) -> Point {
        Point {
            id: id.into(),
            name: id.into(),
            county_code: county.into(),
            lon: 111.8,
            lat: 22.2,
            point_type: t,
            land_use: l,
            ph: None,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const MINIMAL: &str = r#"
        id = "t"
        version = "1"
        source = "test"
        [coverage]
        required_point_types = ["basic", "risk"]
        default_interval_days = 365
        source = "test"
        [[program]]
        id = "p"
        name = "P"
        source = "test"
        [[obligation]]
        program = "p"
        interval_days = 30
        metals = ["Cd"]
        confirmed = false
        source = "test"
    "#;

    #[test]
    fn bad_files_are_refused_with_their_reason_code() {
        let code = |text: &str| {
            Obligations::from_toml(text, &counties())
                .err()
                .map(|e| e.code())
        };
        assert_eq!(code(MINIMAL), None);
        assert_eq!(
            code(&MINIMAL.replace("program = \"p\"", "program = \"q\"")),
            Some("unknown_program")
        );
        assert_eq!(
            code(&MINIMAL.replace("interval_days = 30", "interval_days = 0")),
            Some("zero_interval")
        );
        assert_eq!(
            code(&MINIMAL.replace("default_interval_days = 365", "default_interval_days = 0")),
            Some("zero_interval")
        );
        assert_eq!(
            code(&MINIMAL.replace("[\"Cd\"]", "[\"Fe\"]")),
            Some("unknown_metal")
        );
        assert_eq!(
            code(&MINIMAL.replace("[\"Cd\"]", "[]")),
            Some("unknown_metal")
        );
        assert_eq!(
            code(&MINIMAL.replace("interval_days = 30", "interval_days = -1")),
            Some("malformed_obligations")
        );
        assert_eq!(
            code(&MINIMAL.replace("\"risk\"]", "\"forest\"]")),
            Some("bad_selector")
        );
        let dup = MINIMAL.replace(
            "[[obligation]]",
            "[[program]]\nid = \"p\"\nname = \"again\"\nsource = \"x\"\n[[obligation]]",
        );
        assert_eq!(code(&dup), Some("duplicate_program"));
        let idle = MINIMAL.replace(
            "[[obligation]]",
            "[[program]]\nid = \"idle\"\nname = \"I\"\nsource = \"x\"\n[[obligation]]",
        );
        assert_eq!(code(&idle), Some("program_without_obligation"));
        let far = MINIMAL.replace(
            "source = \"test\"\n        [[obligation]]",
            "source = \"test\"\n        [program.select]\n        counties = [\"110000\"]\n        [[obligation]]",
        );
        assert_eq!(code(&far), Some("bad_selector"));
        assert_eq!(
            shipped()
                .check_programs(&["nope".into()])
                .map_err(|e| e.code()),
            Err("unknown_program")
        );
    }

    #[test]
    fn a_point_owes_the_shortest_interval_of_its_programs_per_metal() {
        let o = shipped();
        // Yangchun paddy, basic: grain/oil farmland (365 d, eight metals) and the basic
        // network (1825 d, five metals): 365 d wins for every metal.
        let paddy = point("a", "441781", PointType::Basic, LandUse::Paddy);
        let owed = o.owed(&paddy, &[]);
        assert_eq!(owed.len(), 8);
        assert!(owed
            .iter()
            .all(|w| w.interval_days == 365 && w.program == "grain_oil_farmland"));
        // The same point in Jiangcheng: basic network only, five metals.
        let elsewhere = point("b", "441702", PointType::Basic, LandUse::Paddy);
        let owed = o.owed(&elsewhere, &[]);
        assert_eq!(owed.len(), 5);
        assert!(owed.iter().all(|w| w.interval_days == 1825));
        assert_eq!(o.window_days(&elsewhere, &[]), 1825);
        // Naming the drinking-water program adds yearly Cu, Zn, Ni.
        let named = o.owed(&elsewhere, &["drinking_water_source".to_string()]);
        assert_eq!(named.len(), 8);
        assert!(named.iter().all(|w| w.interval_days == 365));
        // Background in Yangchun but not farmland land use of the program: 3650 d.
        let bg = point("c", "441781", PointType::Background, LandUse::Tea);
        assert_eq!(o.window_days(&bg, &[]), 3650);
        assert!(o.programs_of(&bg, &[]).iter().all(|p| p.id == "background"));
    }

    #[test]
    fn overdue_counts_from_the_last_sample_or_the_registration() {
        let owed = vec![
            Owed {
                metal: Metal::Cd,
                interval_days: 365,
                program: "p".into(),
            },
            Owed {
                metal: Metal::Pb,
                interval_days: 365,
                program: "p".into(),
            },
        ];
        let registered = at("2025-01-01T00:00:00Z");
        let mut last = HashMap::new();
        last.insert(Metal::Cd, at("2025-06-01T00:00:00Z"));
        // 2026-01-01: Pb due 2026-01-01 exactly (registration + 365 d): not yet overdue.
        assert!(overdue(&owed, &last, registered, at("2026-01-01T00:00:00Z")).is_empty());
        // A second later Pb (never sampled) is overdue; Cd (sampled 2025-06-01) is not.
        let late = overdue(&owed, &last, registered, at("2026-01-01T00:00:01Z"));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].metal, Metal::Pb);
        assert_eq!(late[0].last_sampled_at, None);
        assert_eq!(late[0].due_at, at("2026-01-01T00:00:00Z"));
        // 2026-06-02: both.
        let both = overdue(&owed, &last, registered, at("2026-06-02T00:00:00Z"));
        assert_eq!(both.len(), 2);
        assert_eq!(both[0].last_sampled_at, Some(at("2025-06-01T00:00:00Z")));
        // A new Pb sample clears Pb.
        last.insert(Metal::Pb, at("2026-06-01T00:00:00Z"));
        let cd = overdue(&owed, &last, registered, at("2026-06-02T00:00:00Z"));
        assert_eq!(cd.iter().map(|m| m.metal).collect::<Vec<_>>(), [Metal::Cd]);
    }

    #[test]
    fn coverage_counts_cells_and_missing_types() {
        let now = at("2026-12-01T00:00:00Z");
        let a = point("a", "441781", PointType::Basic, LandUse::Paddy);
        let b = point("b", "441781", PointType::Basic, LandUse::Paddy);
        let c = point("c", "441781", PointType::Risk, LandUse::Paddy);
        let d = point("d", "441702", PointType::Basic, LandUse::DryLand);
        let pcs = vec![
            PointCoverage {
                point: &a,
                window_days: 365,
                last_sampled_at: Some(at("2026-03-01T00:00:00Z")),
                overdue: false,
            },
            PointCoverage {
                point: &b,
                window_days: 365,
                last_sampled_at: Some(at("2025-03-01T00:00:00Z")),
                overdue: true,
            },
            PointCoverage {
                point: &c,
                window_days: 365,
                last_sampled_at: None,
                overdue: false,
            },
            PointCoverage {
                point: &d,
                window_days: 365,
                last_sampled_at: None,
                overdue: false,
            },
        ];
        let counties = vec!["441702".to_string(), "441721".into(), "441781".into()];
        let (cells, per_county) =
            coverage(&pcs, &counties, &[PointType::Basic, PointType::Risk], now);
        assert_eq!(cells.len(), 3);
        let yc_basic = &cells[1];
        assert_eq!(
            (yc_basic.county_code.as_str(), yc_basic.point_type.as_str()),
            ("441781", "basic")
        );
        assert_eq!(
            (
                yc_basic.points,
                yc_basic.sampled_in_window,
                yc_basic.never_sampled,
                yc_basic.overdue
            ),
            (2, 1, 0, 1)
        );
        assert_eq!(cells[2].never_sampled, 1);
        assert_eq!(per_county[0].missing_point_types, ["risk"]);
        assert_eq!(per_county[1].missing_point_types, ["basic", "risk"]);
        assert_eq!(per_county[1].points, 0);
        assert!(per_county[2].complete);
    }

    #[test]
    fn the_city_code_is_not_a_county_lacking_point_types() {
        let now = at("2026-12-01T00:00:00Z");
        let city = point("city", "441700", PointType::Basic, LandUse::DryLand);
        let pcs = vec![PointCoverage {
            point: &city,
            window_days: 365,
            last_sampled_at: None,
            overdue: false,
        }];
        let counties = vec!["441700".to_string(), "441781".into()];
        let (cells, per_county) = coverage(&pcs, &counties, &[PointType::Basic], now);
        assert_eq!(cells.len(), 1, "the city's own points still count");
        let codes: Vec<&str> = per_county.iter().map(|c| c.county_code.as_str()).collect();
        assert_eq!(codes, ["441781"]);
        assert!(is_county_level("441781") && !is_county_level("441700"));
    }

    #[test]
    fn overdue_is_raised_once_per_period_and_cleared() {
        let now = at("2026-12-01T00:00:00Z");
        let m = |interval_days| OverdueMetal {
            metal: Metal::Cd,
            last_sampled_at: None,
            due_at: at("2026-01-01T00:00:00Z"),
            interval_days,
            program: "p".into(),
        };
        let mut current = BTreeMap::new();
        current.insert("a".to_string(), vec![m(365), m(30)]);
        current.insert("b".to_string(), vec![m(365)]);
        current.insert("c".to_string(), vec![m(365)]);
        let mut stored = HashMap::new();
        // b was raised and its reminder is not due; c's reminder is due now; d is stored but
        // no longer overdue.
        stored.insert(
            "b".to_string(),
            StoredOverdue {
                next_reminder_at: at("2026-12-01T00:00:01Z"),
            },
        );
        stored.insert(
            "c".to_string(),
            StoredOverdue {
                next_reminder_at: now,
            },
        );
        stored.insert(
            "d".to_string(),
            StoredOverdue {
                next_reminder_at: now,
            },
        );
        let t = transitions(current, &stored, now);
        let kinds: Vec<(&str, &str)> = t
            .iter()
            .map(|t| match t {
                Transition::Raise {
                    reminder: false, ..
                } => (t.point_id(), "raise"),
                Transition::Raise { reminder: true, .. } => (t.point_id(), "remind"),
                Transition::Keep { .. } => (t.point_id(), "keep"),
                Transition::Clear { .. } => (t.point_id(), "clear"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a", "raise"),
                ("b", "keep"),
                ("c", "remind"),
                ("d", "clear")
            ]
        );
        // The period is the shortest interval among the overdue metals.
        match &t[0] {
            Transition::Raise {
                next_reminder_at, ..
            } => assert_eq!(*next_reminder_at, at("2026-12-31T00:00:00Z")),
            other => panic!("{other:?}"),
        }
    }
}
