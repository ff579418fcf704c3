//! Row and batch checks: raw text → [`LabRow`]s, with every problem reported as an
//! [`Issue`] (code, line, column). QC rules are in [`super::qc`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::{CheckCode, Issue, LabRow, QcType, RawRow};
use crate::config::{IngestConfig, LabConfig};
use crate::domain::metal::Metal;
use crate::domain::unit::Unit;
use crate::registry::{valid_point_id, Registry};

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
    let ctx = checker.ctx;
    let issues = &mut checker.issues;
    let before = issues.len();
    let line = r.line;
    let mut push =
        |code, column, detail: String| issues.push(Issue::row(code, line, column, detail));
    let mut required = |column: &'static str| -> Option<&str> {
        match r.get(column) {
            Some(v) => Some(v),
            None => {
                push(
                    CheckCode::MissingField,
                    column,
                    format!("{column} is required"),
                );
                None
            }
        }
    };
    let batch_id = required("batch_id");
    let lab_id = required("lab_id");
    let sample_id = required("sample_id");
    let metal_text = required("metal");
    let value_text = required("value");
    let unit_text = required("unit");
    let qc_text = required("qc_type");
    let mut push =
        |code, column, detail: String| issues.push(Issue::row(code, line, column, detail));

    for (col, v) in [
        ("batch_id", batch_id),
        ("lab_id", lab_id),
        ("sample_id", sample_id),
    ] {
        if let Some(v) = v {
            if !valid_id(v) {
                push(
                    CheckCode::BadType,
                    col,
                    format!("{v:?}: use 1-128 printable characters, no spaces at the ends"),
                );
            }
        }
    }
    let qc_type = qc_text.and_then(|t| {
        let q = QcType::parse(t);
        if q.is_none() {
            push(
                CheckCode::BadType,
                "qc_type",
                format!(
                    "{t:?}: expected sample, field_duplicate, lab_duplicate, blank, crm or spike"
                ),
            );
        }
        q
    });
    let metal = metal_text.and_then(|t| {
        let m = Metal::parse(t);
        if m.is_none() {
            push(
                CheckCode::UnknownMetal,
                "metal",
                format!("unknown metal {t:?}"),
            );
        }
        m
    });
    let unit = unit_text.and_then(|t| {
        let u = Unit::parse(t);
        if u.is_none() {
            push(
                CheckCode::UnknownUnit,
                "unit",
                format!("unknown unit {t:?}"),
            );
        }
        u
    });
    let detected = match r.get("detected") {
        None => true,
        Some(t) => match parse_bool(t) {
            Some(b) => b,
            None => {
                push(
                    CheckCode::BadType,
                    "detected",
                    format!("{t:?}: expected true/false (also 1/0, yes/no, 是/否)"),
                );
                true
            }
        },
    };
    let factor = unit.map_or(1.0, Unit::to_mg_per_kg);
    let mut number = |column: &'static str, text: Option<&str>| -> Option<f64> {
        let t = text?;
        match t.parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                push(
                    CheckCode::BadType,
                    column,
                    format!("{t:?} is not a finite number"),
                );
                None
            }
        }
    };
    let value = number("value", value_text);
    let mdl = number("mdl", r.get("mdl"));
    let ph = number("ph", r.get("ph"));
    let top = number("depth_top_cm", r.get("depth_top_cm"));
    let bottom = number("depth_bottom_cm", r.get("depth_bottom_cm"));
    let mut push =
        |code, column, detail: String| issues.push(Issue::row(code, line, column, detail));

    if let Some(v) = value.filter(|v| *v < 0.0) {
        push(
            CheckCode::NegativeValue,
            "value",
            format!("{v} is negative"),
        );
    } else if let (Some(v), Some(m), Some(_)) = (value, metal, unit) {
        if v * factor > ctx.ingest.ceiling(m) {
            push(
                CheckCode::ImplausibleValue,
                "value",
                format!(
                    "{} mg/kg is above the {m} ceiling {} mg/kg (unit mistake?)",
                    v * factor,
                    ctx.ingest.ceiling(m)
                ),
            );
        }
    }
    if let Some(m) = mdl {
        if m < 0.0 {
            push(CheckCode::NegativeValue, "mdl", format!("{m} is negative"));
        }
    }
    if mdl.is_none() && r.get("mdl").is_none() && (!detected || qc_type == Some(QcType::Blank)) {
        push(
            CheckCode::MissingMdl,
            "mdl",
            "a non-detect or a blank needs its method detection limit".into(),
        );
    }
    if let Some(p) = ph {
        if !(0.0..=14.0).contains(&p) {
            push(
                CheckCode::PhOutOfRange,
                "ph",
                format!("pH {p} is outside 0-14"),
            );
        }
    }
    let depth_cm = match (top, bottom) {
        (Some(t), Some(b)) if t >= 0.0 && t < b => Some((t, b)),
        (None, None) => None,
        (t, b) => {
            if !(r.get("depth_top_cm").is_some() && t.is_none()
                || r.get("depth_bottom_cm").is_some() && b.is_none())
            {
                push(
                    CheckCode::BadDepth,
                    "depth_top_cm",
                    "depth needs both top and bottom with 0 <= top < bottom".into(),
                );
            }
            None
        }
    };
    let field_sample = matches!(qc_type, Some(QcType::Sample | QcType::FieldDuplicate));
    let point_id = r.get("point_id");
    match point_id {
        None if field_sample => push(
            CheckCode::MissingField,
            "point_id",
            "point_id is required for field samples".into(),
        ),
        Some(p) if !valid_point_id(p) || ctx.registry.get(p).is_none() => push(
            CheckCode::UnknownPoint,
            "point_id",
            format!("point {p:?} is not registered"),
        ),
        _ => {}
    }
    let sampled_at = match r.get("sampled_at") {
        None => {
            if field_sample {
                push(
                    CheckCode::MissingField,
                    "sampled_at",
                    "sampled_at is required for field samples".into(),
                );
            }
            None
        }
        Some(t) => check_time(t, "sampled_at", ctx, &mut push),
    };
    let analysed_at = r
        .get("analysed_at")
        .and_then(|t| check_time(t, "analysed_at", ctx, &mut push));
    let qc_ref = r.get("qc_ref");
    if qc_ref.is_none()
        && matches!(
            qc_type,
            Some(QcType::FieldDuplicate | QcType::LabDuplicate | QcType::Crm | QcType::Spike)
        )
    {
        push(
            CheckCode::OrphanQcRef,
            "qc_ref",
            "duplicates, spikes and CRM rows need qc_ref".into(),
        );
    }
    if issues.len() > before {
        return None;
    }
    let value = value?;
    Some(LabRow {
        line,
        batch_id: checker.batch_ids.get(batch_id?),
        lab_id: checker.lab_ids.get(lab_id?),
        sample_id: Box::from(sample_id?),
        point_id: point_id.map(|p| checker.points.get(p)),
        sampled_at,
        analysed_at,
        depth_cm,
        ph,
        metal: metal?,
        value_orig: value,
        unit_orig: checker.units.get(unit_text?),
        value_mgkg: value * factor,
        detected,
        mdl_mgkg: mdl.map(|m| m * factor),
        method: r.get("method").map(|m| checker.methods.get(m)),
        qc_type: qc_type?,
        qc_ref: qc_ref.map(Box::from),
    })
}

fn check_time(
    text: &str,
    column: &'static str,
    ctx: &CheckContext<'_>,
    push: &mut impl FnMut(CheckCode, &'static str, String),
) -> Option<DateTime<Utc>> {
    let Some(at) = parse_time(text) else {
        push(
            CheckCode::BadTimestamp,
            column,
            format!("{text:?}: use RFC 3339, YYYY-MM-DD HH:MM[:SS] or YYYY-MM-DD (UTC+8)"),
        );
        return None;
    };
    if at < ctx.lab.earliest_sample {
        push(
            CheckCode::BadTimestamp,
            column,
            format!("{text} is before {}", ctx.lab.earliest_sample),
        );
        return None;
    }
    if at > ctx.now + Duration::seconds(ctx.ingest.future_skew_secs) {
        push(
            CheckCode::FutureTimestamp,
            column,
            format!("{text} is in the future (server time {})", ctx.now),
        );
        return None;
    }
    Some(at)
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

fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && !id.chars().any(char::is_control) && id.trim() == id
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
