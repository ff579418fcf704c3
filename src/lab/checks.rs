//! Row and batch checks: raw text → [`LabRow`]s, with every problem reported as an
//! [`Issue`] (code, line, column). QC rules are in [`super::qc`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::{CheckCode, Issue, LabRow, QcType, RawRow};
use crate::config::{IngestConfig, LabConfig};
use crate::domain::metal::Metal;
use crate::domain::rules::valid_point_id;
use crate::domain::rules::{self, RuleError, TimeWindow};
use crate::domain::unit::Unit;
use crate::registry::Registry;

/// Offset of dates and times written without one (China Standard Time, UTC+8).
pub const LOCAL_OFFSET_SECS: i32 = 8 * 3600;

/// What the checks need besides the rows.
pub struct CheckContext<'a> {
    /// Point registry snapshot.
    pub registry: &'a Registry,
    /// Plausibility ceilings and future skew.
    pub ingest: &'a IngestConfig,
    /// Lab rules.
    pub lab: &'a LabConfig,
    /// The server time.
    pub now: DateTime<Utc>,
}

/// Shares the texts that repeat across a batch's rows (batch, lab, point, unit, method): one
/// allocation per distinct text, not one per row.
#[derive(Default)]
struct Interner {
    last: Option<Arc<str>>,
    seen: HashSet<Arc<str>>,
}

impl Interner {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(last) = self.last.as_ref().filter(|l| &***l == text) {
            return last.clone();
        }
        let shared = match self.seen.get(text) {
            Some(s) => s.clone(),
            None => {
                let s: Arc<str> = Arc::from(text);
                self.seen.insert(s.clone());
                s
            }
        };
        self.last = Some(shared.clone());
        shared
    }
}

/// Checks rows one at a time as they are read ([`RowChecker::row`]), then the batch
/// ([`RowChecker::finish`]: consistent batch/lab id, duplicate rows).
pub struct RowChecker<'c> {
    ctx: &'c CheckContext<'c>,
    rows: Vec<LabRow>,
    issues: Vec<Issue>,
    batch_ids: Interner,
    lab_ids: Interner,
    points: Interner,
    units: Interner,
    methods: Interner,
}

impl<'c> RowChecker<'c> {
    /// A checker with no rows yet.
    pub fn new(ctx: &'c CheckContext<'c>) -> RowChecker<'c> {
        RowChecker::with_capacity(ctx, 0)
    }

    /// A checker with room for `rows` rows (no reallocation, hence no transient second copy of
    /// the rows, while a large batch is read).
    pub fn with_capacity(ctx: &'c CheckContext<'c>, rows: usize) -> RowChecker<'c> {
        RowChecker {
            ctx,
            rows: Vec::with_capacity(rows),
            issues: Vec::new(),
            batch_ids: Interner::default(),
            lab_ids: Interner::default(),
            points: Interner::default(),
            units: Interner::default(),
            methods: Interner::default(),
        }
    }

    /// Checks one row: keeps it when it passed, records its issues otherwise.
    pub fn row(&mut self, r: &RawRow<'_>) {
        if let Some(row) = check_row(r, self) {
            self.rows.push(row);
        }
    }

    /// The batch checks. Returns the rows that parsed (possibly with issues elsewhere) and
    /// every issue found, in line order.
    pub fn finish(self) -> (Vec<LabRow>, Vec<Issue>) {
        let (rows, mut issues) = (self.rows, self.issues);
        if let Some(first) = rows.first() {
            let (batch, lab) = (first.batch_id.clone(), first.lab_id.clone());
            for r in &rows {
                if r.batch_id != batch {
                    issues.push(Issue::row(
                        CheckCode::BatchMismatch,
                        r.line,
                        "batch_id",
                        format!("{:?} differs from the first row's {batch:?}", r.batch_id),
                    ));
                }
                if r.lab_id != lab {
                    issues.push(Issue::row(
                        CheckCode::BatchMismatch,
                        r.line,
                        "lab_id",
                        format!("{:?} differs from the first row's {lab:?}", r.lab_id),
                    ));
                }
            }
        }
        let mut first_line: HashMap<(&str, Metal), u64> = HashMap::with_capacity(rows.len());
        for r in &rows {
            if let Some(line) = first_line.insert((&r.sample_id, r.metal), r.line) {
                // Keep the first occurrence as the reference.
                first_line.insert((&r.sample_id, r.metal), line);
                issues.push(Issue::row(
                    CheckCode::DuplicateRow,
                    r.line,
                    "sample_id",
                    format!(
                        "sample {:?} {} already on line {line}",
                        r.sample_id, r.metal
                    ),
                ));
            }
        }
        drop(first_line);
        issues.sort_by_key(|i| (i.line.unwrap_or(u64::MAX), i.code));
        (rows, issues)
    }
}

/// Collects the issues of one row; `None` when a field the row cannot exist without failed.
fn check_row(r: &RawRow<'_>, checker: &mut RowChecker<'_>) -> Option<LabRow> {
    let before = checker.issues.len();
    let fields = RowCheck {
        r,
        ctx: checker.ctx,
        issues: &mut checker.issues,
    }
    .fields();
    if checker.issues.len() > before {
        return None;
    }
    fields.into_row(r, checker)
}

/// The checked fields of one row, before the row is built (`None`: absent or refused).
struct RowFields<'a> {
    batch_id: Option<&'a str>,
    lab_id: Option<&'a str>,
    sample_id: Option<&'a str>,
    unit_text: Option<&'a str>,
    qc_type: Option<QcType>,
    metal: Option<Metal>,
    factor: f64,
    detected: bool,
    value: Option<f64>,
    mdl: Option<f64>,
    ph: Option<f64>,
    depth_cm: Option<(f64, f64)>,
    point_id: Option<&'a str>,
    sampled_at: Option<DateTime<Utc>>,
    analysed_at: Option<DateTime<Utc>>,
    qc_ref: Option<&'a str>,
}

impl RowFields<'_> {
    /// The row, its repeated texts shared through the checker's interners.
    fn into_row(self, r: &RawRow<'_>, checker: &mut RowChecker<'_>) -> Option<LabRow> {
        let (value, factor) = (self.value?, self.factor);
        Some(LabRow {
            line: r.line,
            batch_id: checker.batch_ids.get(self.batch_id?),
            lab_id: checker.lab_ids.get(self.lab_id?),
            sample_id: Box::from(self.sample_id?),
            point_id: self.point_id.map(|p| checker.points.get(p)),
            sampled_at: self.sampled_at,
            analysed_at: self.analysed_at,
            depth_cm: self.depth_cm,
            ph: self.ph,
            metal: self.metal?,
            value_orig: value,
            unit_orig: checker.units.get(self.unit_text?),
            value_mgkg: value * factor,
            detected: self.detected,
            mdl_mgkg: self.mdl.map(|m| m * factor),
            method: r.get("method").map(|m| checker.methods.get(m)),
            qc_type: self.qc_type?,
            qc_ref: self.qc_ref.map(Box::from),
            matrix: r
                .get("matrix")
                .filter(|m| !super::crop::is_soil(m))
                .map(Box::from),
        })
    }
}

/// The checks of one row, each recording its issues (in this order: the order of the issues
/// of one line and code in the report).
struct RowCheck<'r, 'a> {
    r: &'r RawRow<'a>,
    ctx: &'r CheckContext<'r>,
    issues: &'r mut Vec<Issue>,
}

impl<'a> RowCheck<'_, 'a> {
    fn push(&mut self, code: CheckCode, column: &'static str, detail: String) {
        self.issues
            .push(Issue::row(code, self.r.line, column, detail));
    }

    /// Every check of the row, in report order.
    fn fields(mut self) -> RowFields<'a> {
        let batch_id = self.required("batch_id");
        let lab_id = self.required("lab_id");
        let sample_id = self.required("sample_id");
        let metal_text = self.required("metal");
        let value_text = self.required("value");
        let unit_text = self.required("unit");
        let qc_text = self.required("qc_type");
        self.id("batch_id", batch_id);
        self.id("lab_id", lab_id);
        self.id("sample_id", sample_id);
        let qc_type = self.qc_type(qc_text);
        let metal = self.metal(metal_text);
        let unit = self.unit(unit_text);
        let detected = self.detected();
        let value = self.number("value", value_text);
        let mdl = self.number("mdl", self.r.get("mdl"));
        let ph = self.number("ph", self.r.get("ph"));
        let top = self.number("depth_top_cm", self.r.get("depth_top_cm"));
        let bottom = self.number("depth_bottom_cm", self.r.get("depth_bottom_cm"));
        self.value(value, metal, unit);
        self.mdl(mdl, detected, qc_type);
        self.ph(ph);
        let depth_cm = self.depth(top, bottom);
        let field_sample = matches!(qc_type, Some(QcType::Sample | QcType::FieldDuplicate));
        let point_id = self.point(field_sample);
        let sampled_at = self.sampled_at(field_sample);
        let analysed_at = self
            .r
            .get("analysed_at")
            .and_then(|t| self.time(t, "analysed_at"));
        let qc_ref = self.qc_ref(qc_type);
        RowFields {
            batch_id,
            lab_id,
            sample_id,
            unit_text,
            qc_type,
            metal,
            factor: unit.map_or(1.0, Unit::to_mg_per_kg),
            detected,
            value,
            mdl,
            ph,
            depth_cm,
            point_id,
            sampled_at,
            analysed_at,
            qc_ref,
        }
    }

    fn required(&mut self, column: &'static str) -> Option<&'a str> {
        let v = self.r.get(column);
        if v.is_none() {
            self.push(
                CheckCode::MissingField,
                column,
                format!("{column} is required"),
            );
        }
        v
    }

    /// An id column, by [`rules::check_id`].
    fn id(&mut self, column: &'static str, v: Option<&str>) {
        if let Some(v) = v.filter(|v| rules::check_id(v).is_err()) {
            self.push(
                CheckCode::BadType,
                column,
                format!("{v:?}: use 1-128 printable characters, no spaces at the ends"),
            );
        }
    }

    fn qc_type(&mut self, text: Option<&str>) -> Option<QcType> {
        let t = text?;
        let q = QcType::parse(t);
        if q.is_none() {
            self.push(
                CheckCode::BadType,
                "qc_type",
                format!(
                    "{t:?}: expected sample, field_duplicate, lab_duplicate, blank, crm or spike"
                ),
            );
        }
        q
    }

    fn metal(&mut self, text: Option<&str>) -> Option<Metal> {
        let t = text?;
        let m = Metal::parse(t);
        if m.is_none() {
            self.push(
                CheckCode::UnknownMetal,
                "metal",
                format!("unknown metal {t:?}"),
            );
        }
        m
    }

    fn unit(&mut self, text: Option<&str>) -> Option<Unit> {
        let t = text?;
        let u = Unit::parse(t);
        if u.is_none() {
            self.push(
                CheckCode::UnknownUnit,
                "unit",
                format!("unknown unit {t:?}"),
            );
        }
        u
    }

    /// The optional `detected` flag (absent, or unreadable and reported: detected).
    fn detected(&mut self) -> bool {
        let Some(t) = self.r.get("detected") else {
            return true;
        };
        parse_bool(t).unwrap_or_else(|| {
            self.push(
                CheckCode::BadType,
                "detected",
                format!("{t:?}: expected true/false (also 1/0, yes/no, 是/否)"),
            );
            true
        })
    }

    fn number(&mut self, column: &'static str, text: Option<&str>) -> Option<f64> {
        let t = text?;
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                self.push(
                    CheckCode::BadType,
                    column,
                    format!("{t:?} is not a finite number"),
                );
                None
            }
        }
    }

    /// The value: not negative, and (metal and unit known) not above the metal's ceiling.
    fn value(&mut self, value: Option<f64>, metal: Option<Metal>, unit: Option<Unit>) {
        let Some(v) = value else {
            return;
        };
        if rules::check_not_negative(v).is_err() {
            self.push(
                CheckCode::NegativeValue,
                "value",
                format!("{v} is negative"),
            );
            return;
        }
        let (Some(m), Some(u)) = (metal, unit) else {
            return;
        };
        if let Err(RuleError::AboveCeiling {
            value_mgkg,
            ceiling_mgkg,
        }) = rules::check_ceiling(v * u.to_mg_per_kg(), self.ctx.ingest.ceiling(m))
        {
            self.push(
                CheckCode::ImplausibleValue,
                "value",
                format!(
                    "{value_mgkg} mg/kg is above the {m} ceiling {ceiling_mgkg} mg/kg (unit mistake?)"
                ),
            );
        }
    }

    /// The detection limit: not negative, and present for a non-detect or a blank.
    fn mdl(&mut self, mdl: Option<f64>, detected: bool, qc_type: Option<QcType>) {
        if let Some(m) = mdl.filter(|m| rules::check_not_negative(*m).is_err()) {
            self.push(CheckCode::NegativeValue, "mdl", format!("{m} is negative"));
        }
        if mdl.is_none()
            && self.r.get("mdl").is_none()
            && (!detected || qc_type == Some(QcType::Blank))
        {
            self.push(
                CheckCode::MissingMdl,
                "mdl",
                "a non-detect or a blank needs its method detection limit".into(),
            );
        }
    }

    fn ph(&mut self, ph: Option<f64>) {
        if let Some(p) = ph.filter(|p| rules::check_ph(*p).is_err()) {
            self.push(
                CheckCode::PhOutOfRange,
                "ph",
                format!("pH {p} is outside 0-14"),
            );
        }
    }

    /// Depth: both ends or neither, 0 <= top < bottom (an unreadable end is already reported).
    fn depth(&mut self, top: Option<f64>, bottom: Option<f64>) -> Option<(f64, f64)> {
        match (top, bottom) {
            (Some(t), Some(b)) if t >= 0.0 && t < b => Some((t, b)),
            (None, None) => None,
            (t, b) => {
                if !(self.r.get("depth_top_cm").is_some() && t.is_none()
                    || self.r.get("depth_bottom_cm").is_some() && b.is_none())
                {
                    self.push(
                        CheckCode::BadDepth,
                        "depth_top_cm",
                        "depth needs both top and bottom with 0 <= top < bottom".into(),
                    );
                }
                None
            }
        }
    }

    /// The point: required for field samples, registered when given.
    fn point(&mut self, field_sample: bool) -> Option<&'a str> {
        let point_id = self.r.get("point_id");
        let crop = self
            .r
            .get("matrix")
            .is_some_and(|m| !super::crop::is_soil(m));
        match point_id {
            // A crop sample must name the soil (farmland point) it grew on.
            None if field_sample && crop => self.push(
                CheckCode::CropWithoutSoilPoint,
                "point_id",
                "a crop sample must name the registered farmland point it grew on".into(),
            ),
            None if field_sample => self.push(
                CheckCode::MissingField,
                "point_id",
                "point_id is required for field samples".into(),
            ),
            Some(p) if !valid_point_id(p) || self.ctx.registry.get(p).is_none() => self.push(
                CheckCode::UnknownPoint,
                "point_id",
                format!("point {p:?} is not registered"),
            ),
            _ => {}
        }
        point_id
    }

    /// The sampling time: required for field samples, in the accepted window when given.
    fn sampled_at(&mut self, field_sample: bool) -> Option<DateTime<Utc>> {
        match self.r.get("sampled_at") {
            Some(t) => self.time(t, "sampled_at"),
            None => {
                if field_sample {
                    self.push(
                        CheckCode::MissingField,
                        "sampled_at",
                        "sampled_at is required for field samples".into(),
                    );
                }
                None
            }
        }
    }

    /// A time column: readable ([`parse_time`]) and in the accepted [`TimeWindow`].
    fn time(&mut self, text: &str, column: &'static str) -> Option<DateTime<Utc>> {
        let Some(at) = parse_time(text) else {
            self.push(
                CheckCode::BadTimestamp,
                column,
                format!("{text:?}: use RFC 3339, YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DD (UTC+8)"),
            );
            return None;
        };
        let window = TimeWindow {
            earliest: self.ctx.lab.earliest_sample,
            now: self.ctx.now,
            skew_secs: self.ctx.ingest.future_skew_secs,
        };
        match window.check(at) {
            Ok(()) => return Some(at),
            Err(RuleError::TooOld { earliest }) => self.push(
                CheckCode::BadTimestamp,
                column,
                format!("{text} is before {earliest}"),
            ),
            // `InFuture`, the only other failure of the window.
            Err(_) => self.push(
                CheckCode::FutureTimestamp,
                column,
                format!("{text} is in the future (server time {})", self.ctx.now),
            ),
        }
        None
    }

    /// `qc_ref`: required for duplicates, spikes and CRMs (their content is checked by QC).
    fn qc_ref(&mut self, qc_type: Option<QcType>) -> Option<&'a str> {
        let qc_ref = self.r.get("qc_ref");
        if qc_ref.is_none()
            && matches!(
                qc_type,
                Some(QcType::FieldDuplicate | QcType::LabDuplicate | QcType::Crm | QcType::Spike)
            )
        {
            self.push(
                CheckCode::OrphanQcRef,
                "qc_ref",
                "duplicates, spikes and CRM rows need qc_ref".into(),
            );
        }
        qc_ref
    }
}

/// Parses RFC 3339, or a date/time without offset (taken as UTC+8).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Some(t) = parse_plain_local(text) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    let local = FixedOffset::east_opt(LOCAL_OFFSET_SECS)?;
    let naive = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    local
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// The common shapes without offset, `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`,
/// `YYYY-MM-DD HH:MM:SS` and `YYYY-MM-DDTHH:MM:SS` (UTC+8), read directly: the same result as
/// the format strings of [`parse_time`], without them. `None` for anything else (then
/// [`parse_time`] tries its formats).
fn parse_plain_local(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(digits(0..4)?).ok()?,
        digits(5..7)?,
        digits(8..10)?,
    )?;
    let (h, m, s) = match (b.len(), b.get(10)) {
        (10, _) => (0, 0, 0),
        (16, Some(b' ')) if b[13] == b':' => (digits(11..13)?, digits(14..16)?, 0),
        (19, Some(b' ' | b'T')) if b[13] == b':' && b[16] == b':' => {
            (digits(11..13)?, digits(14..16)?, digits(17..19)?)
        }
        _ => return None,
    };
    let naive = date.and_hms_opt(h, m, s)?;
    FixedOffset::east_opt(LOCAL_OFFSET_SECS)?
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_lowercase().as_str() {
        "true" | "1" | "yes" | "y" | "是" | "检出" => Some(true),
        "false" | "0" | "no" | "n" | "否" | "未检出" | "nd" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::point::{LandUse, Point, PointType};
    use crate::lab::csv::parse_csv;

    pub(crate) fn registry() -> Registry {
        Registry::new(vec![Point {
            id: "P1".into(),
            name: "p".into(),
            county_code: "441781".into(),
            lon: 111.0,
            lat: 22.0,
            point_type: PointType::Basic,
            land_use: LandUse::Paddy,
            ph: Some(6.2),
        }])
    }

    pub(crate) fn configs() -> (IngestConfig, LabConfig) {
        let s = crate::config::Settings::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/default.toml"
        )))
        .expect("default config");
        (s.ingest, s.lab)
    }

    pub(crate) const HEADER: &str = "batch_id,lab_id,sample_id,point_id,sampled_at,depth_top_cm,depth_bottom_cm,ph,metal,value,unit,detected,mdl,method,qc_type,qc_ref";

    fn codes(rows: &str) -> Vec<(CheckCode, Option<u64>, Option<&'static str>)> {
        let (ingest, lab) = configs();
        let reg = registry();
        let ctx = CheckContext {
            registry: &reg,
            ingest: &ingest,
            lab: &lab,
            now: Utc::now(),
        };
        let mut checker = RowChecker::new(&ctx);
        parse_csv(format!("{HEADER}\n{rows}").as_bytes(), &mut |r| {
            checker.row(r)
        })
        .expect("parses");
        let (_, issues) = checker.finish();
        issues.iter().map(|i| (i.code, i.line, i.column)).collect()
    }

    const OK: &str = "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,HJ 803,sample,";

    #[test]
    fn a_good_row_has_no_issue() {
        assert_eq!(codes(OK), vec![]);
    }

    #[test]
    fn each_row_check_has_its_code_line_and_column() {
        use CheckCode::*;
        let cases: [(&str, CheckCode, &str); 16] = [
            (
                "B1,L1,,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                MissingField,
                "sample_id",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,abc,mg/kg,true,0.01,M,sample,",
                BadType,
                "value",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,maybe,0.01,M,sample,",
                BadType,
                "detected",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,control,",
                BadType,
                "qc_type",
            ),
            (
                "B1,L1,S1,P1,01/02/2026,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                BadTimestamp,
                "sampled_at",
            ),
            (
                "B1,L1,S1,P1,1990-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                BadTimestamp,
                "sampled_at",
            ),
            (
                "B1,L1,S1,P1,2999-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                FutureTimestamp,
                "sampled_at",
            ),
            (
                "B1,L1,S1,PX,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                UnknownPoint,
                "point_id",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Fe,0.3,mg/kg,true,0.01,M,sample,",
                UnknownMetal,
                "metal",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/l,true,0.01,M,sample,",
                UnknownUnit,
                "unit",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,-1,mg/kg,true,0.01,M,sample,",
                NegativeValue,
                "value",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,20,g/kg,true,0.01,M,sample,",
                ImplausibleValue,
                "value",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,false,,M,sample,",
                MissingMdl,
                "mdl",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,0,20,15,Cd,0.3,mg/kg,true,0.01,M,sample,",
                PhOutOfRange,
                "ph",
            ),
            (
                "B1,L1,S1,P1,2026-01-01,20,0,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,",
                BadDepth,
                "depth_top_cm",
            ),
            (
                "B1,L1,S1-D,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,field_duplicate,",
                OrphanQcRef,
                "qc_ref",
            ),
        ];
        for (row, code, column) in cases {
            assert_eq!(codes(row), vec![(code, Some(2), Some(column))], "{row}");
        }
    }

    #[test]
    fn ids_are_trimmed_by_the_readers_and_counted_in_bytes() {
        let padded = OK.replacen("B1", " B1\u{3000}", 1);
        assert_eq!(
            codes(&padded),
            vec![],
            "cells are trimmed before the id rule"
        );
        let ok = OK.replacen("S1", &"样".repeat(42), 1);
        assert_eq!(codes(&ok), vec![], "126 bytes");
        let long = OK.replacen("S1", &"样".repeat(43), 1);
        assert_eq!(
            codes(&long),
            vec![(CheckCode::BadType, Some(2), Some("sample_id"))],
            "43 characters are 129 bytes"
        );
    }

    #[test]
    fn batch_checks_and_all_issues_are_reported() {
        use CheckCode::*;
        let rows = format!("{OK}\n{OK}\nB2,L1,S2,P1,2026-01-01,0,20,6.2,Cd,0.3,mg/kg,true,0.01,M,sample,\nB1,L1,S3,PX,2026-01-01,0,20,6.2,Fe,-1,mg/l,true,0.01,M,sample,\n");
        let got = codes(&rows);
        assert_eq!(
            got,
            vec![
                (DuplicateRow, Some(3), Some("sample_id")),
                (BatchMismatch, Some(4), Some("batch_id")),
                (UnknownPoint, Some(5), Some("point_id")),
                (UnknownMetal, Some(5), Some("metal")),
                (UnknownUnit, Some(5), Some("unit")),
                (NegativeValue, Some(5), Some("value")),
            ]
        );
    }

    #[test]
    fn times_without_offset_are_utc_plus_8() {
        assert_eq!(
            parse_time("2026-01-01").map(|t| t.to_rfc3339()),
            Some("2025-12-31T16:00:00+00:00".into())
        );
        assert_eq!(
            parse_time("2026-01-01 08:30"),
            parse_time("2026-01-01T00:30:00Z")
        );
    }

    #[test]
    fn the_fast_time_path_reads_as_the_formats_do() {
        let formats = |text: &str| {
            let local = FixedOffset::east_opt(LOCAL_OFFSET_SECS).expect("offset");
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .or_else(|| {
                    NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .ok()
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                })
                .and_then(|n| local.from_local_datetime(&n).single())
                .map(|t| t.with_timezone(&Utc))
        };
        for text in [
            "2026-01-01",
            "2026-12-31 23:59",
            "2026-02-28 00:00:59",
            "2026-06-15T08:30:00",
            "2024-02-29",
        ] {
            assert!(parse_plain_local(text).is_some(), "{text}");
            assert_eq!(parse_plain_local(text), formats(text), "{text}");
            assert_eq!(parse_time(text), formats(text), "{text}");
        }
        for text in [
            "2026-02-30",
            "2026-01-01T10:00",
            "2026-01-01 24:00",
            "2026-13-01",
            "2026-1-01",
            "2026-01-01 10:00:60",
            "2026/01/01",
            "2026-01-01 10:0a",
            "+2026-01-01",
        ] {
            assert_eq!(parse_plain_local(text), None, "{text}");
        }
        assert_eq!(parse_time("2026-1-5"), formats("2026-1-5"));
        assert_eq!(parse_time("2026-01-01T10:00"), None);
    }
}
