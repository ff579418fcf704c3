//! Lab batch uploads, the pure part: parsing a batch (CSV, JSON or xlsx) into rows, checking every
//! row and the batch as a whole, and the QC rules. No I/O: the HTTP adapter (`http`) reads
//! the body, the store (`store::lab`) checks against stored data and writes.
//!
//! A batch is accepted whole or rejected whole: every problem found is reported as an
//! [`Issue`] with its code, line and column, never just the first one.

pub mod checks;
pub mod crop;
pub mod csv;
pub mod qc;
pub mod xlsx;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::metal::Metal;

/// Errors of the lab module (a body that cannot be read as a batch at all is reported as
/// issues instead; this is for programming-level failures).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The report could not be serialised.
    #[error("report: {0}")]
    Report(#[from] serde_json::Error),
    /// A CSV could not be read while writing it as xlsx.
    #[error("csv: {0}")]
    Csv(#[from] ::csv::Error),
    /// An xlsx workbook could not be written.
    #[error("xlsx: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
}

/// Why a row or a batch was refused. The spelling of each code is part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckCode {
    /// The body is not UTF-8, not CSV/JSON of the expected shape, or a row is unreadable.
    MalformedBatch,
    /// The header lacks a required column.
    MissingColumn,
    /// The batch has no rows.
    EmptyBatch,
    /// A required field is empty.
    MissingField,
    /// A field does not parse as its type (number, boolean, QC type, identifier).
    BadType,
    /// A date is unreadable or before `lab.earliest_sample`.
    BadTimestamp,
    /// A date lies in the future.
    FutureTimestamp,
    /// `point_id` is not registered.
    UnknownPoint,
    /// Unknown analyte.
    UnknownMetal,
    /// Unknown unit.
    UnknownUnit,
    /// A negative value or MDL.
    NegativeValue,
    /// Above the metal's physical ceiling after unit conversion.
    ImplausibleValue,
    /// A non-detect (or a blank) without a method detection limit.
    MissingMdl,
    /// pH outside 0–14.
    PhOutOfRange,
    /// Depth top/bottom not `0 ≤ top < bottom`.
    BadDepth,
    /// The same (sample, metal) twice in the batch.
    DuplicateRow,
    /// Rows of one batch disagree on `batch_id` or `lab_id`.
    BatchMismatch,
    /// `qc_ref` is required, unreadable, or points to no sample/metal in the batch.
    OrphanQcRef,
    /// The same (sample, metal) is stored from another batch with a different value.
    ConflictsWithStored,
    /// The same (sample, metal) is already stored from another batch (same value).
    AlreadyStored,
    /// Fewer duplicates than `lab.duplicate_rate` / `lab.min_duplicates` require.
    QcDuplicateRate,
    /// Fewer blanks than `lab.blank_rate` / `lab.min_blanks` require.
    QcBlankRate,
    /// A duplicate pair's relative deviation exceeds its concentration band's limit.
    QcDuplicateDeviation,
    /// A blank at or above its MDL.
    QcBlankAboveMdl,
    /// A CRM result outside its certified range: the batch is invalid.
    QcCrmOutOfRange,
    /// A spike recovery outside the configured window.
    QcSpikeRecovery,
    /// `matrix` names no GB 2762 food category (nor soil).
    UnknownMatrix,
    /// A crop sample without a registered farmland point to link it to.
    CropWithoutSoilPoint,
}

impl CheckCode {
    /// Every code, for documentation and metrics.
    pub const ALL: [CheckCode; 28] = [
        CheckCode::MalformedBatch,
        CheckCode::MissingColumn,
        CheckCode::EmptyBatch,
        CheckCode::MissingField,
        CheckCode::BadType,
        CheckCode::BadTimestamp,
        CheckCode::FutureTimestamp,
        CheckCode::UnknownPoint,
        CheckCode::UnknownMetal,
        CheckCode::UnknownUnit,
        CheckCode::NegativeValue,
        CheckCode::ImplausibleValue,
        CheckCode::MissingMdl,
        CheckCode::PhOutOfRange,
        CheckCode::BadDepth,
        CheckCode::DuplicateRow,
        CheckCode::BatchMismatch,
        CheckCode::OrphanQcRef,
        CheckCode::ConflictsWithStored,
        CheckCode::AlreadyStored,
        CheckCode::QcDuplicateRate,
        CheckCode::QcBlankRate,
        CheckCode::QcDuplicateDeviation,
        CheckCode::QcBlankAboveMdl,
        CheckCode::QcCrmOutOfRange,
        CheckCode::QcSpikeRecovery,
        CheckCode::UnknownMatrix,
        CheckCode::CropWithoutSoilPoint,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckCode::MalformedBatch => "malformed_batch",
            CheckCode::MissingColumn => "missing_column",
            CheckCode::EmptyBatch => "empty_batch",
            CheckCode::MissingField => "missing_field",
            CheckCode::BadType => "bad_type",
            CheckCode::BadTimestamp => "bad_timestamp",
            CheckCode::FutureTimestamp => "future_timestamp",
            CheckCode::UnknownPoint => "unknown_point",
            CheckCode::UnknownMetal => "unknown_metal",
            CheckCode::UnknownUnit => "unknown_unit",
            CheckCode::NegativeValue => "negative_value",
            CheckCode::ImplausibleValue => "implausible_value",
            CheckCode::MissingMdl => "missing_mdl",
            CheckCode::PhOutOfRange => "ph_out_of_range",
            CheckCode::BadDepth => "bad_depth",
            CheckCode::DuplicateRow => "duplicate_row",
            CheckCode::BatchMismatch => "batch_mismatch",
            CheckCode::OrphanQcRef => "orphan_qc_ref",
            CheckCode::ConflictsWithStored => "conflicts_with_stored",
            CheckCode::AlreadyStored => "already_stored",
            CheckCode::QcDuplicateRate => "qc_duplicate_rate",
            CheckCode::QcBlankRate => "qc_blank_rate",
            CheckCode::QcDuplicateDeviation => "qc_duplicate_deviation",
            CheckCode::QcBlankAboveMdl => "qc_blank_above_mdl",
            CheckCode::QcCrmOutOfRange => "qc_crm_out_of_range",
            CheckCode::QcSpikeRecovery => "qc_spike_recovery",
            CheckCode::UnknownMatrix => "unknown_matrix",
            CheckCode::CropWithoutSoilPoint => "crop_without_soil_point",
        }
    }
}

impl fmt::Display for CheckCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    /// The check that failed.
    pub code: CheckCode,
    /// Line of the row (CSV: physical line, header = 1; JSON: 1-based row index; xlsx: the
    /// sheet's row number);
    /// absent for batch-level findings.
    pub line: Option<u64>,
    /// Column concerned, when one is.
    pub column: Option<&'static str>,
    /// What exactly is wrong.
    pub detail: String,
}

impl Issue {
    /// An issue on one row and column.
    pub fn row(code: CheckCode, line: u64, column: &'static str, detail: String) -> Issue {
        Issue {
            code,
            line: Some(line),
            column: Some(column),
            detail,
        }
    }

    /// A batch-level issue.
    pub fn batch(code: CheckCode, detail: String) -> Issue {
        Issue {
            code,
            line: None,
            column: None,
            detail,
        }
    }
}

/// The kind of a result row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QcType {
    /// A field sample: judged, stored as a reading, may alert.
    Sample,
    /// A second field sample of the same spot (`qc_ref` = the sample).
    FieldDuplicate,
    /// A second analysis of the same sample in the lab (`qc_ref` = the sample).
    LabDuplicate,
    /// A method blank.
    Blank,
    /// A certified reference material (`qc_ref` = `NAME:certified:low:high`, mg/kg).
    Crm,
    /// A matrix spike (`qc_ref` = `SAMPLE_ID:added_mgkg`).
    Spike,
}

impl QcType {
    /// Parses the API spelling (and the Chinese names).
    pub fn parse(text: &str) -> Option<QcType> {
        match text.trim().to_lowercase().as_str() {
            "sample" | "样品" => Some(QcType::Sample),
            "field_duplicate" | "现场平行" => Some(QcType::FieldDuplicate),
            "lab_duplicate" | "实验室平行" => Some(QcType::LabDuplicate),
            "blank" | "空白" => Some(QcType::Blank),
            "crm" | "标准物质" => Some(QcType::Crm),
            "spike" | "加标" => Some(QcType::Spike),
            _ => None,
        }
    }

    /// The API and database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            QcType::Sample => "sample",
            QcType::FieldDuplicate => "field_duplicate",
            QcType::LabDuplicate => "lab_duplicate",
            QcType::Blank => "blank",
            QcType::Crm => "crm",
            QcType::Spike => "spike",
        }
    }
}

/// Number of canonical columns ([`csv::COLUMNS`]).
pub const N_COLUMNS: usize = 18;

/// One row as read from the body: the trimmed text of each canonical column, by position in
/// [`csv::COLUMNS`], borrowed from the parser (rows are streamed, never collected as text).
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow<'a> {
    /// Line number (see [`Issue::line`]).
    pub line: u64,
    /// Fields by position in [`csv::COLUMNS`]; empty fields are `None`.
    pub fields: [Option<&'a str>; N_COLUMNS],
}

impl<'a> RawRow<'a> {
    /// A field's text, if present and non-empty.
    pub fn get(&self, column: &str) -> Option<&'a str> {
        csv::column_index(column)
            .and_then(|i| self.fields[i])
            .filter(|s| !s.is_empty())
    }
}

/// One checked result row. Texts that repeat across a batch (batch, lab, point, unit,
/// method) are shared, not copied per row.
#[derive(Debug, Clone, PartialEq)]
pub struct LabRow {
    /// Line number in the upload.
    pub line: u64,
    /// Batch id (one analytical run).
    pub batch_id: Arc<str>,
    /// Laboratory id.
    pub lab_id: Arc<str>,
    /// Sample id (for QC rows, the QC item's own id).
    pub sample_id: Box<str>,
    /// Monitoring point (required for field samples and field duplicates).
    pub point_id: Option<Arc<str>>,
    /// When the soil was sampled (required for field samples and field duplicates).
    pub sampled_at: Option<DateTime<Utc>>,
    /// When the lab analysed it (optional `analysed_at` column).
    pub analysed_at: Option<DateTime<Utc>>,
    /// Sampling depth (top, bottom), cm.
    pub depth_cm: Option<(f64, f64)>,
    /// pH of the same sample.
    pub ph: Option<f64>,
    /// Analyte.
    pub metal: Metal,
    /// Value as sent.
    pub value_orig: f64,
    /// Unit as sent.
    pub unit_orig: Arc<str>,
    /// Value in mg/kg.
    pub value_mgkg: f64,
    /// False when below the MDL.
    pub detected: bool,
    /// Method detection limit, mg/kg.
    pub mdl_mgkg: Option<f64>,
    /// Analysis method (standard number).
    pub method: Option<Arc<str>>,
    /// Row kind.
    pub qc_type: QcType,
    /// Link of a QC row (see [`QcType`]).
    pub qc_ref: Option<Box<str>>,
    /// The sample's matrix when it is a crop (optional `matrix` column, a GB 2762 food
    /// category); `None` for soil, the default. Crop samples are judged by [`crop`], never
    /// as soil readings.
    pub matrix: Option<Box<str>>,
}

impl LabRow {
    /// The value to judge: the measured value, or the MDL for a non-detect.
    pub fn judged_value_mgkg(&self) -> f64 {
        if self.detected {
            self.value_mgkg
        } else {
            self.mdl_mgkg.unwrap_or(self.value_mgkg)
        }
    }
}

/// What parsing a whole body yields besides its rows (which go to the caller one by one): the
/// row count and the SHA-256 of their canonical content (same values ⇒ same hash, whatever the
/// format, delimiter, BOM, line endings or column order).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Rows read.
    pub rows: usize,
    /// Hex SHA-256 of the canonical content.
    pub content_sha256: String,
}

/// A batch after every pure check: the rows that parsed, every issue, the QC summary.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Batch id (from the first readable row).
    pub batch_id: Option<String>,
    /// Lab id (from the first readable row).
    pub lab_id: Option<String>,
    /// Hex SHA-256 of the canonical content.
    pub content_sha256: String,
    /// Rows read from the body.
    pub row_count: usize,
    /// Rows that passed the row checks.
    pub rows: Vec<LabRow>,
    /// Every distinct `point_id` the body names, rows that failed their checks included (an
    /// enterprise's ownership is decided on these, before the row checks' verdict).
    pub point_ids: std::collections::BTreeSet<String>,
    /// Every issue found (row, batch and QC).
    pub issues: Vec<Issue>,
    /// QC results.
    pub qc: qc::QcSummary,
}

/// Reads a CSV body and runs the row, batch and QC checks on it, row by row as it is read.
/// `Err` when the body cannot be read as a batch at all (see [`csv::parse_csv`]).
pub fn check_csv(body: &[u8], ctx: &checks::CheckContext<'_>) -> Result<Checked, Vec<Issue>> {
    // At most one row per line after the header (a hint only: capped, so that a body of
    // blank lines cannot reserve much; pages never written are not resident anyway).
    let lines = body.iter().filter(|b| **b == b'\n').count().min(1 << 20);
    check_with(|on_row| csv::parse_csv(body, on_row), ctx, lines)
}

/// [`check_csv`] for an xlsx body (its first sheet, see [`xlsx`]).
pub fn check_xlsx(body: &[u8], ctx: &checks::CheckContext<'_>) -> Result<Checked, Vec<Issue>> {
    check_with(|on_row| xlsx::parse_xlsx(body, on_row), ctx, 0)
}

/// [`check_csv`] for a JSON body.
pub fn check_json(body: &[u8], ctx: &checks::CheckContext<'_>) -> Result<Checked, Vec<Issue>> {
    check_with(|on_row| csv::parse_json(body, on_row), ctx, 0)
}

fn check_with(
    parse: impl FnOnce(&mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>>,
    ctx: &checks::CheckContext<'_>,
    rows_hint: usize,
) -> Result<Checked, Vec<Issue>> {
    let mut checker = checks::RowChecker::with_capacity(ctx, rows_hint);
    let mut first: Option<(Option<String>, Option<String>)> = None;
    let mut point_ids = std::collections::BTreeSet::new();
    let parsed = parse(&mut |r: &RawRow<'_>| {
        if let Some(p) = r.get("point_id") {
            if !point_ids.contains(p) {
                point_ids.insert(p.to_string());
            }
        }
        if first.is_none() {
            first = Some((
                r.get("batch_id").map(str::to_string),
                r.get("lab_id").map(str::to_string),
            ));
        }
        checker.row(r);
    })?;
    let (rows, mut issues) = checker.finish();
    let (qc, qc_issues) = qc::check(&rows, ctx.lab);
    issues.extend(qc_issues);
    let (batch_id, lab_id) = first.unwrap_or_default();
    Ok(Checked {
        batch_id,
        lab_id,
        content_sha256: parsed.content_sha256,
        row_count: parsed.rows,
        rows,
        point_ids,
        issues,
        qc,
    })
}

/// Whether a batch was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Every check passed; the batch is stored.
    Accepted,
    /// At least one issue; nothing is stored.
    Rejected,
}

/// An [`Issue`] as a client reads it back from a report (the column name owned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedIssue {
    /// The check that failed.
    pub code: CheckCode,
    /// Line of the row; absent for batch-level findings.
    pub line: Option<u64>,
    /// Column concerned, when one is.
    pub column: Option<String>,
    /// What exactly is wrong.
    pub detail: String,
}

/// Outcome of an upload, as returned by the API and stored with the batch. The server
/// builds it with [`Issue`]s; a client reads it back with [`ReportedIssue`]s
/// ([`ReadReport`]; counts and lists missing from a stored report read as empty).
///
/// Serialised directly (a body that is no batch at all) the fields come in the order below;
/// [`Report::to_json`] gives the form with sorted keys that the API answers for a checked
/// batch and stores with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(deserialize = "E: Deserialize<'de>"))]
pub struct Report<E = Issue> {
    /// Batch id, when readable.
    pub batch_id: Option<String>,
    /// Lab id, when readable.
    pub lab_id: Option<String>,
    /// Accepted or rejected.
    pub status: BatchStatus,
    /// Hex SHA-256 of the canonical content.
    pub content_sha256: Option<String>,
    /// Rows in the upload.
    #[serde(default)]
    pub rows: usize,
    /// Rows per QC type ([`QcType::as_str`]).
    #[serde(default)]
    pub by_qc_type: BTreeMap<Cow<'static, str>, usize>,
    /// Field-sample readings per judgement level (accepted batches;
    /// [`crate::domain::judge::Level::as_str`]).
    #[serde(default)]
    pub by_judgement: BTreeMap<Cow<'static, str>, usize>,
    /// Alert events queued (accepted batches).
    #[serde(default)]
    pub alerts: usize,
    /// QC results.
    #[serde(default)]
    pub qc: qc::QcSummary,
    /// Number of issues.
    #[serde(default)]
    pub error_count: usize,
    /// Every issue, in line order (batch-level ones last).
    #[serde(default)]
    pub errors: Vec<E>,
    /// When the upload was received.
    pub received_at: DateTime<Utc>,
}

/// A report as a client deserialises it.
pub type ReadReport = Report<ReportedIssue>;

impl Report {
    /// A report for a body that could not be read as a batch at all.
    pub fn unreadable(issues: Vec<Issue>, received_at: DateTime<Utc>) -> Report {
        Report {
            batch_id: None,
            lab_id: None,
            status: BatchStatus::Rejected,
            content_sha256: None,
            rows: 0,
            by_qc_type: BTreeMap::new(),
            by_judgement: BTreeMap::new(),
            alerts: 0,
            qc: qc::QcSummary::default(),
            error_count: issues.len(),
            errors: issues,
            received_at,
        }
    }

    /// The report of a checked batch (rejected when it has issues).
    pub fn of(c: &Checked, received_at: DateTime<Utc>) -> Report {
        let mut by_qc_type = BTreeMap::new();
        for r in &c.rows {
            *by_qc_type.entry(r.qc_type.as_str().into()).or_default() += 1;
        }
        Report {
            batch_id: c.batch_id.clone(),
            lab_id: c.lab_id.clone(),
            status: if c.issues.is_empty() {
                BatchStatus::Accepted
            } else {
                BatchStatus::Rejected
            },
            content_sha256: Some(c.content_sha256.clone()),
            rows: c.row_count,
            by_qc_type,
            by_judgement: BTreeMap::new(),
            alerts: 0,
            qc: c.qc.clone(),
            error_count: c.issues.len(),
            errors: c.issues.clone(),
            received_at,
        }
    }

    /// The report as JSON with sorted keys: the API's answer for a checked batch and the
    /// form stored with it.
    pub fn to_json(&self) -> Result<serde_json::Value, LabError> {
        Ok(serde_json::to_value(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        let at = DateTime::parse_from_rfc3339("2024-05-01T08:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let issues = vec![
            Issue::row(
                CheckCode::UnknownMetal,
                2,
                "metal",
                "unknown metal \"Fe\"".into(),
            ),
            Issue::batch(CheckCode::QcBlankRate, "0 blanks".into()),
        ];
        let mut r = Report::unreadable(issues, at);
        r.batch_id = Some("B1".into());
        r.content_sha256 = Some("ab".into());
        r.rows = 3;
        r.by_qc_type.insert("sample".into(), 2);
        r.by_qc_type.insert("blank".into(), 1);
        r.by_judgement.insert("below_screening".into(), 2);
        r.by_judgement.insert("above_intervention".into(), 1);
        r.alerts = 1;
        r.qc.samples = 2;
        r.qc.blanks.required = 1;
        r.qc.blanks.present = 1;
        r
    }

    /// Captured from the code before the report became typed (serialised straight from
    /// the struct, as a body that is no batch answers).
    const DIRECT: &str = r#"{"batch_id":"B1","lab_id":null,"status":"rejected","content_sha256":"ab","rows":3,"by_qc_type":{"blank":1,"sample":2},"by_judgement":{"above_intervention":1,"below_screening":2},"alerts":1,"qc":{"samples":2,"duplicates":{"required":0,"present":0,"checked":0,"failed":0},"blanks":{"required":1,"present":1,"checked":0,"failed":0},"crm":{"required":0,"present":0,"checked":0,"failed":0},"spikes":{"required":0,"present":0,"checked":0,"failed":0}},"error_count":2,"errors":[{"code":"unknown_metal","line":2,"column":"metal","detail":"unknown metal \"Fe\""},{"code":"qc_blank_rate","line":null,"column":null,"detail":"0 blanks"}],"received_at":"2024-05-01T08:00:00Z"}"#;

    /// The same report through `to_json` (sorted keys), as a checked batch answers and stores.
    const SORTED: &str = r#"{"alerts":1,"batch_id":"B1","by_judgement":{"above_intervention":1,"below_screening":2},"by_qc_type":{"blank":1,"sample":2},"content_sha256":"ab","error_count":2,"errors":[{"code":"unknown_metal","column":"metal","detail":"unknown metal \"Fe\"","line":2},{"code":"qc_blank_rate","column":null,"detail":"0 blanks","line":null}],"lab_id":null,"qc":{"blanks":{"checked":0,"failed":0,"present":1,"required":1},"crm":{"checked":0,"failed":0,"present":0,"required":0},"duplicates":{"checked":0,"failed":0,"present":0,"required":0},"samples":2,"spikes":{"checked":0,"failed":0,"present":0,"required":0}},"received_at":"2024-05-01T08:00:00Z","rows":3,"status":"rejected"}"#;

    #[test]
    fn report_json_is_unchanged() -> Result<(), LabError> {
        let r = sample_report();
        assert_eq!(serde_json::to_string(&r)?, DIRECT);
        assert_eq!(serde_json::to_string(&r.to_json()?)?, SORTED);
        Ok(())
    }

    #[test]
    fn a_client_reads_both_forms_back() -> Result<(), LabError> {
        for text in [DIRECT, SORTED] {
            let back: ReadReport = serde_json::from_str(text)?;
            assert_eq!(back.status, BatchStatus::Rejected);
            assert_eq!(back.by_judgement.get("below_screening"), Some(&2));
            assert_eq!(back.qc, sample_report().qc);
            assert_eq!(
                back.errors[0],
                ReportedIssue {
                    code: CheckCode::UnknownMetal,
                    line: Some(2),
                    column: Some("metal".into()),
                    detail: "unknown metal \"Fe\"".into(),
                }
            );
            assert_eq!(back.errors[1].column, None);
            // Read back and written again: the same JSON.
            assert_eq!(serde_json::to_string(&back)?, DIRECT);
        }
        Ok(())
    }
}
