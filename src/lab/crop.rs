//! Crop samples in a lab batch, pure: a row whose `matrix` is not soil is a crop sample
//! (rice, wheat, maize, leafy/root vegetables…: a GB 2762 food category). These checks run
//! after the row checks: the matrix must name a known category, and a crop field sample must
//! be linked to a registered farmland point (the soil it grew on).

use crate::domain::crop::FoodStandard;
use crate::registry::Registry;

use super::{CheckCode, Issue, LabRow, QcType};

/// Whether a `matrix` cell means soil (the default when the column is absent or empty).
pub fn is_soil(matrix: &str) -> bool {
    matches!(
        matrix.trim().to_lowercase().as_str(),
        "soil" | "土壤" | "土"
    )
}

/// The issues of the batch's crop rows (rows that passed the row checks; a crop sample with no
/// point at all is refused there, as `crop_without_soil_point`): `unknown_matrix` for a
/// matrix that is neither soil nor a category of `food`; `crop_without_soil_point` for a
/// crop field sample (or field duplicate) whose point is not farmland.
pub fn check(rows: &[LabRow], food: &FoodStandard, registry: &Registry) -> Vec<Issue> {
    let mut issues = Vec::new();
    for r in rows {
        let Some(matrix) = r.matrix.as_deref() else {
            continue;
        };
        if food.category(matrix).is_none() {
            issues.push(Issue::row(
                CheckCode::UnknownMatrix,
                r.line,
                "matrix",
                format!("{matrix:?} is not soil nor a {} food category", food.id),
            ));
            continue;
        }
        if !matches!(r.qc_type, QcType::Sample | QcType::FieldDuplicate) {
            continue;
        }
        let point = r.point_id.as_deref().and_then(|p| registry.get(p));
        match (r.point_id.as_deref(), point) {
            (_, Some(p)) if p.land_use.is_farmland() => {}
            (Some(id), Some(_)) => issues.push(Issue::row(
                CheckCode::CropWithoutSoilPoint,
                r.line,
                "point_id",
                format!("{id} is development land: a crop sample needs a farmland point"),
            )),
            _ => issues.push(Issue::row(
                CheckCode::CropWithoutSoilPoint,
                r.line,
                "point_id",
                "a crop sample must name the registered farmland point it grew on".into(),
            )),
        }
    }
    issues
}
