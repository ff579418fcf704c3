//! The monitoring-point registry: the CSV import format and the in-memory lookup the
//! collector validates against.
//!
//! CSV header (one row per point; `ph` may be empty):
//! `point_id,name,county_code,lon,lat,point_type,land_use,ph`, optionally followed by
//! `programs`: the monitoring programs the point belongs to besides those that select it by
//! its attributes (ids declared in the obligations file, separated by `;`, may be empty).

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::domain::enterprise::{check_uscc, parse_planned_use, Enterprise, Plot, PlotStatus};
use crate::domain::obligation::Obligations;
use crate::domain::point::{LandUse, Point, PointType};
use crate::domain::rules::valid_point_id;

/// Errors reading a points file.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The CSV itself is malformed.
    #[error("line {line}: {source}")]
    Csv {
        /// 1-based line number (the header is line 1).
        line: u64,
        /// Underlying error.
        source: csv::Error,
    },
    /// A row parsed but a field is not acceptable.
    #[error("line {line}: {column}: {detail}")]
    Field {
        /// 1-based line number.
        line: u64,
        /// Column name.
        column: &'static str,
        /// What is wrong.
        detail: String,
    },
}

#[derive(Debug, Deserialize)]
struct Row {
    point_id: String,
    name: String,
    county_code: String,
    lon: f64,
    lat: f64,
    point_type: String,
    land_use: String,
    ph: Option<f64>,
    #[serde(default, alias = "program")]
    programs: Option<String>,
}

/// A registry row: the point and the programs it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The point.
    pub point: Point,
    /// Programs named in the `programs` column (checked against the obligations file).
    pub programs: Vec<String>,
}

/// Parses a points CSV for import: every row is checked, `programs` included (each id must
/// be a program of `obligations`); the first error is returned with its line.
pub fn parse_points_file(
    input: impl Read,
    counties: &[String],
    obligations: &Obligations,
) -> Result<Vec<Registered>, RegistryError> {
    let rows = parse_rows(input, counties)?;
    for (i, r) in rows.iter().enumerate() {
        obligations
            .check_programs(&r.programs)
            .map_err(|e| RegistryError::Field {
                line: i as u64 + 2,
                column: "programs",
                detail: e.to_string(),
            })?;
    }
    Ok(rows)
}

/// Parses a points CSV into its points. Every row is checked; the first error is returned
/// with its line. The optional `programs` column is read but not checked here (see
/// [`parse_points_file`]).
pub fn parse_points_csv(
    input: impl Read,
    counties: &[String],
) -> Result<Vec<Point>, RegistryError> {
    Ok(parse_rows(input, counties)?
        .into_iter()
        .map(|r| r.point)
        .collect())
}

/// Parses a points CSV into its points, checking every row and reporting **every** bad row
/// (at most [`MAX_POINT_ERRORS`]), each with its line, instead of the first one only.
pub fn check_points_csv(
    input: impl Read,
    counties: &[String],
) -> Result<Vec<Point>, Vec<RegistryError>> {
    Ok(check_rows(input, counties)?
        .into_iter()
        .map(|r| r.point)
        .collect())
}

/// The most errors [`check_points_csv`] reports for one file.
pub const MAX_POINT_ERRORS: usize = 1000;

/// The one parser behind [`parse_points_file`] and [`parse_points_csv`]: the first error.
fn parse_rows(input: impl Read, counties: &[String]) -> Result<Vec<Registered>, RegistryError> {
    check_rows(input, counties).map_err(|errors| {
        errors.into_iter().next().unwrap_or(RegistryError::Field {
            line: 1,
            column: "point_id",
            detail: "unreadable".into(),
        })
    })
}

/// Every row checked; all errors (up to [`MAX_POINT_ERRORS`]) with their physical lines.
fn check_rows(
    input: impl Read,
    counties: &[String],
) -> Result<Vec<Registered>, Vec<RegistryError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|source| vec![RegistryError::Csv { line: 1, source }])?
        .clone();
    let mut points: Vec<Registered> = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashMap::new();
    for record in reader.records() {
        let checked = record
            .map_err(|source| RegistryError::Csv {
                line: source.position().map_or(0, |p| p.line()),
                source,
            })
            .and_then(|r| {
                let line = r.position().map_or(0, |p| p.line());
                let row: Row = r
                    .deserialize(Some(&headers))
                    .map_err(|source| RegistryError::Csv { line, source })?;
                check_row(row, line, counties, &mut seen)
            });
        match checked {
            Ok(p) => points.push(p),
            Err(e) => errors.push(e),
        }
        if errors.len() >= MAX_POINT_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        Ok(points)
    } else {
        Err(errors)
    }
}

/// One row's checks (`seen`: point ids by the line that registered them).
fn check_row(
    record: Row,
    line: u64,
    counties: &[String],
    seen: &mut HashMap<String, u64>,
) -> Result<Registered, RegistryError> {
    let field = |column, detail: String| RegistryError::Field {
        line,
        column,
        detail,
    };
    if !valid_point_id(&record.point_id) {
        return Err(field(
            "point_id",
            format!(
                "{:?}: use letters, digits, '-' and '_' (1-64)",
                record.point_id
            ),
        ));
    }
    if let Some(first) = seen.insert(record.point_id.clone(), line) {
        return Err(field("point_id", format!("duplicate of line {first}")));
    }
    if !counties.contains(&record.county_code) {
        return Err(field(
            "county_code",
            format!("{:?} is not one of {counties:?}", record.county_code),
        ));
    }
    if !(-180.0..=180.0).contains(&record.lon) || !(-90.0..=90.0).contains(&record.lat) {
        return Err(field("lon", "coordinates out of range".into()));
    }
    let point_type = PointType::parse(&record.point_type)
        .ok_or_else(|| field("point_type", format!("unknown {:?}", record.point_type)))?;
    let land_use = LandUse::parse(&record.land_use)
        .ok_or_else(|| field("land_use", format!("unknown {:?}", record.land_use)))?;
    if let Some(ph) = record.ph {
        if !(0.0..=14.0).contains(&ph) {
            return Err(field("ph", format!("{ph} is outside 0-14")));
        }
    }
    let programs = record
        .programs
        .as_deref()
        .unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    Ok(Registered {
        point: Point {
            id: record.point_id,
            name: record.name,
            county_code: record.county_code,
            lon: record.lon,
            lat: record.lat,
            point_type,
            land_use,
            ph: record.ph,
        },
        programs,
    })
}

#[derive(Debug, Deserialize)]
struct EnterpriseRow {
    credit_code: String,
    name: String,
    industry: String,
    county_code: String,
    lon: f64,
    lat: f64,
    #[serde(default)]
    points: Option<String>,
}

/// Parses a key supervised enterprise CSV
/// (`credit_code,name,industry,county_code,lon,lat,points`, points `;`-separated): the credit
/// code is checked (GB 32100 check character), the county is known, every point is in
/// `registry`. The first error is returned with its line.
pub fn parse_enterprises_csv(
    input: impl Read,
    counties: &[String],
    registry: &Registry,
) -> Result<Vec<Enterprise>, RegistryError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut out: Vec<Enterprise> = Vec::new();
    for record in reader.deserialize::<EnterpriseRow>() {
        let record = record.map_err(|source| RegistryError::Csv {
            line: source.position().map_or(0, |p| p.line()),
            source,
        })?;
        let line = out.len() as u64 + 2;
        let field = |column, detail: String| RegistryError::Field {
            line,
            column,
            detail,
        };
        let credit_code =
            check_uscc(&record.credit_code).map_err(|e| field("credit_code", e.to_string()))?;
        if out.iter().any(|e| e.credit_code == credit_code) {
            return Err(field("credit_code", format!("{credit_code} appears twice")));
        }
        if !counties.contains(&record.county_code) {
            return Err(field(
                "county_code",
                format!("{:?} is not one of {counties:?}", record.county_code),
            ));
        }
        let points = point_list(record.points.as_deref());
        if let Some(p) = points.iter().find(|p| registry.get(p).is_none()) {
            return Err(field(
                "points",
                format!("unknown_point: {p:?} is not registered"),
            ));
        }
        out.push(Enterprise {
            credit_code,
            name: record.name,
            industry: record.industry,
            county_code: record.county_code,
            lon: record.lon,
            lat: record.lat,
            points,
        });
    }
    Ok(out)
}

/// A `;`-separated list of point ids (blank entries dropped).
fn point_list(cell: Option<&str>) -> Vec<String> {
    cell.unwrap_or("")
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

#[derive(Debug, Deserialize)]
struct PlotRow {
    plot_id: String,
    name: String,
    county_code: String,
    planned_use: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    points: Option<String>,
}

/// Parses a development-land plot CSV (`plot_id,name,county_code,planned_use,status,points`,
/// points `;`-separated): the id is a valid id and appears once, the county is known, the
/// planned use is a GB 36600 class (`unknown_planned_use`), the status is empty or on the
/// ladder (`bad_status`), every point is registered (`unknown_point`), is development land of
/// the plot's planned use (`planned_use_mismatch`: its readings are judged by that class) and
/// belongs to one plot of the file only (`point_in_two_plots`). The first error is returned
/// with its line.
pub fn parse_plots_csv(
    input: impl Read,
    counties: &[String],
    registry: &Registry,
) -> Result<Vec<Plot>, RegistryError> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(input);
    let mut out: Vec<Plot> = Vec::new();
    for record in reader.deserialize::<PlotRow>() {
        let record = record.map_err(|source| RegistryError::Csv {
            line: source.position().map_or(0, |p| p.line()),
            source,
        })?;
        let line = out.len() as u64 + 2;
        let plot = check_plot(record, counties, registry, &out).map_err(|(column, detail)| {
            RegistryError::Field {
                line,
                column,
                detail,
            }
        })?;
        out.push(plot);
    }
    Ok(out)
}

/// The checks of one plot row against the registry and the rows before it.
fn check_plot(
    r: PlotRow,
    counties: &[String],
    registry: &Registry,
    before: &[Plot],
) -> Result<Plot, (&'static str, String)> {
    if !valid_point_id(&r.plot_id) {
        return Err(("plot_id", format!("bad_plot_id: {:?}", r.plot_id)));
    }
    if before.iter().any(|p| p.plot_id == r.plot_id) {
        return Err((
            "plot_id",
            format!("duplicate_plot: {} appears twice", r.plot_id),
        ));
    }
    if !counties.contains(&r.county_code) {
        return Err((
            "county_code",
            format!(
                "unknown_county: {:?} is not one of {counties:?}",
                r.county_code
            ),
        ));
    }
    let planned_use = parse_planned_use(&r.planned_use).ok_or_else(|| {
        (
            "planned_use",
            format!(
                "unknown_planned_use: {:?} (first, second, development_first, development_second)",
                r.planned_use
            ),
        )
    })?;
    let status = match r.status.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(PlotStatus::parse(s).ok_or_else(|| {
            (
                "status",
                format!("bad_status: {s:?} (suspected, investigated, risk_control, remediated)"),
            )
        })?),
    };
    let points = point_list(r.points.as_deref());
    for (i, id) in points.iter().enumerate() {
        if points[..i].contains(id) {
            return Err(("points", format!("duplicate_point: {id} is listed twice")));
        }
        let Some(p) = registry.get(id) else {
            return Err(("points", format!("unknown_point: {id:?} is not registered")));
        };
        if p.land_use != planned_use {
            return Err((
                "points",
                format!(
                    "planned_use_mismatch: {id} is {}, the plot is {}",
                    p.land_use.as_str(),
                    planned_use.as_str()
                ),
            ));
        }
        if let Some(other) = before.iter().find(|o| o.points.contains(id)) {
            return Err((
                "points",
                format!("point_in_two_plots: {id} is also in {}", other.plot_id),
            ));
        }
    }
    Ok(Plot {
        plot_id: r.plot_id,
        name: r.name,
        county_code: r.county_code,
        planned_use,
        status,
        points,
    })
}

/// The registered points, by id.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    points: HashMap<String, Point>,
}

impl Registry {
    /// Builds the lookup from a list of points.
    pub fn new(points: Vec<Point>) -> Registry {
        Registry {
            points: points.into_iter().map(|p| (p.id.clone(), p)).collect(),
        }
    }

    /// The point with this id.
    pub fn get(&self, id: &str) -> Option<&Point> {
        self.points.get(id)
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no point is registered.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// All points, in no particular order.
    pub fn points(&self) -> impl Iterator<Item = &Point> {
        self.points.values()
    }
}

/// The registry snapshot shared by the collector, the HTTP layer and the refresh task.
///
/// Readers take a cheap [`Arc`] snapshot that stays valid while the refresh task swaps in
/// a new one. A lock poisoned by a panicking holder still holds a whole snapshot (the only
/// write is one pointer swap), so it is used as is.
#[derive(Debug, Clone, Default)]
pub struct SharedRegistry {
    current: Arc<RwLock<Arc<Registry>>>,
}

impl SharedRegistry {
    /// Shares `registry` as the first snapshot.
    pub fn new(registry: Registry) -> SharedRegistry {
        SharedRegistry {
            current: Arc::new(RwLock::new(Arc::new(registry))),
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Registry> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Makes `registry` the snapshot later readers get.
    pub fn replace(&self, registry: Registry) {
        let fresh = Arc::new(registry);
        match self.current.write() {
            Ok(mut r) => *r = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counties() -> Vec<String> {
        vec!["441781".to_string()]
    }

    #[test]
    fn parses_rows_and_reports_the_bad_line() {
        let ok = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
                  441781-B-0001,Test,441781,111.78,22.17,basic,paddy,6.2\n\
                  441781-B-0002,Test 2,441781,111.79,22.18,背景点位,旱地,\n";
        let points = parse_points_csv(ok.as_bytes(), &counties()).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].land_use, LandUse::DryLand);
        assert_eq!(points[1].point_type, PointType::Background);
        assert_eq!(points[1].ph, None);

        let bad = format!("{ok}441781-B-0003,X,441781,111.7,22.1,basic,forest,6\n");
        let err = parse_points_csv(bad.as_bytes(), &counties()).unwrap_err();
        assert!(err.to_string().starts_with("line 4: land_use"), "{err}");

        let dup = format!("{ok}441781-B-0001,X,441781,111.7,22.1,basic,paddy,6\n");
        let err = parse_points_csv(dup.as_bytes(), &counties()).unwrap_err();
        assert!(err.to_string().contains("duplicate of line 2"), "{err}");

        let county = ok.replace("441781,111.79", "441799,111.79");
        let err = parse_points_csv(county.as_bytes(), &counties()).unwrap_err();
        assert!(err.to_string().starts_with("line 3: county_code"), "{err}");
    }

    #[test]
    fn the_optional_programs_column_is_read_and_checked() {
        let text = include_str!("../config/obligations/yangjiang.toml");
        let obligations = Obligations::from_toml(text, &counties()).unwrap();
        let csv = "point_id,name,county_code,lon,lat,point_type,land_use,ph,programs\n\
                   441781-B-0001,A,441781,111.78,22.17,basic,paddy,6.2,drinking_water_source\n\
                   441781-B-0002,B,441781,111.79,22.18,basic,paddy,6.2,\n";
        let rows = parse_points_file(csv.as_bytes(), &counties(), &obligations).unwrap();
        assert_eq!(rows[0].programs, ["drinking_water_source"]);
        assert!(rows[1].programs.is_empty());
        let bad = csv.replace("drinking_water_source", "drinking_water_source;spa");
        let err = parse_points_file(bad.as_bytes(), &counties(), &obligations).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2: programs: unknown_program"),
            "{err}"
        );
        // Without the column (the original format) every point names no program.
        let plain = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
                     441781-B-0001,A,441781,111.78,22.17,basic,paddy,6.2\n";
        let rows = parse_points_file(plain.as_bytes(), &counties(), &obligations).unwrap();
        assert!(rows[0].programs.is_empty());
    }

    #[test]
    fn enterprises_are_checked_by_credit_code_county_and_points() {
        let points = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
                      441781-R-0001,Pond,441781,111.7,22.3,risk,paddy,6.0\n";
        let registry = Registry::new(parse_points_csv(points.as_bytes(), &counties()).unwrap());
        let ok = "credit_code,name,industry,county_code,lon,lat,points\n\
                  91350100M000100Y43,Mine,lead-zinc mining,441781,111.6,22.3,441781-R-0001\n";
        let list = parse_enterprises_csv(ok.as_bytes(), &counties(), &registry).unwrap();
        assert_eq!(list[0].points, ["441781-R-0001"]);
        let bad = ok.replace("Y43", "Y44");
        let err = parse_enterprises_csv(bad.as_bytes(), &counties(), &registry).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("line 2: credit_code: bad_credit_check_digit"),
            "{err}"
        );
        let foreign = ok.replace("441781-R-0001\n", "441781-R-0009\n");
        let err = parse_enterprises_csv(foreign.as_bytes(), &counties(), &registry).unwrap_err();
        assert!(err.to_string().contains("unknown_point"), "{err}");
    }

    #[test]
    fn shared_registry_swaps_snapshots_and_survives_a_poisoned_lock() {
        let csv = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
                   441781-B-0001,Test,441781,111.78,22.17,basic,paddy,6.2\n";
        let shared = SharedRegistry::new(Registry::default());
        let old = shared.snapshot();
        shared.replace(Registry::new(
            parse_points_csv(csv.as_bytes(), &counties()).unwrap(),
        ));
        assert!(old.is_empty(), "a taken snapshot does not change");
        assert_eq!(shared.snapshot().len(), 1);

        let poisoner = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.current.write().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(shared.current.is_poisoned());
        assert_eq!(shared.snapshot().len(), 1);
        shared.replace(Registry::default());
        assert!(shared.snapshot().is_empty());
    }
}
