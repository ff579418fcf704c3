//! Reading a batch body into [`RawRow`]s: CSV (UTF-8 with or without BOM, comma or tab,
//! LF or CRLF, quoted fields, English or Chinese headers) or JSON (an array of objects, or
//! `{"rows": [...]}`, keyed by the same column names).
//!
//! Rows are streamed: each one is handed to the caller's `on_row` as it is read, its fields
//! borrowed from the parser's buffer, and is never kept here (a 100,000-row batch is not held
//! as 100,000 maps of strings). The content hash is computed on the way.

use std::borrow::Cow;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{CheckCode, Issue, Parsed, RawRow, N_COLUMNS};

/// The template's columns, in order (`analysed_at` and `matrix` are optional and extra). A [`RawRow`]'s
/// fields are indexed by position in this list.
pub const COLUMNS: [&str; N_COLUMNS] = [
    "batch_id",
    "lab_id",
    "sample_id",
    "point_id",
    "sampled_at",
    "depth_top_cm",
    "depth_bottom_cm",
    "ph",
    "metal",
    "value",
    "unit",
    "detected",
    "mdl",
    "method",
    "qc_type",
    "qc_ref",
    "analysed_at",
    "matrix",
];

/// Columns every upload's header must have.
pub const REQUIRED_COLUMNS: [&str; 7] = [
    "batch_id",
    "lab_id",
    "sample_id",
    "metal",
    "value",
    "unit",
    "qc_type",
];

/// Chinese (and a few English) aliases of the canonical column names.
const ALIASES: [(&str, &str); 33] = [
    ("批次号", "batch_id"),
    ("批次编号", "batch_id"),
    ("实验室", "lab_id"),
    ("实验室编号", "lab_id"),
    ("样品编号", "sample_id"),
    ("点位编号", "point_id"),
    ("采样时间", "sampled_at"),
    ("采样日期", "sampled_at"),
    ("采样深度上限", "depth_top_cm"),
    ("采样深度下限", "depth_bottom_cm"),
    ("酸碱度", "ph"),
    ("ph值", "ph"),
    ("检测项目", "metal"),
    ("分析项目", "metal"),
    ("元素", "metal"),
    ("测定值", "value"),
    ("检测值", "value"),
    ("结果", "value"),
    ("单位", "unit"),
    ("是否检出", "detected"),
    ("检出", "detected"),
    ("检出限", "mdl"),
    ("方法检出限", "mdl"),
    ("分析方法", "method"),
    ("方法", "method"),
    ("质控类型", "qc_type"),
    ("质控关联", "qc_ref"),
    ("关联样品", "qc_ref"),
    ("分析时间", "analysed_at"),
    ("分析日期", "analysed_at"),
    ("样品基质", "matrix"),
    ("基质", "matrix"),
    ("样品种类", "matrix"),
];

/// The position of a canonical column name in [`COLUMNS`].
pub fn column_index(column: &str) -> Option<usize> {
    COLUMNS.iter().position(|c| *c == column)
}

/// [`COLUMNS`] positions in the order of their names (the content hash's field order).
fn hash_order() -> [usize; N_COLUMNS] {
    let mut order: [usize; N_COLUMNS] = std::array::from_fn(|i| i);
    order.sort_by_key(|i| COLUMNS[*i]);
    order
}

/// The content hash, fed one row at a time (see [`content_hash`]).
pub(super) struct RowHasher {
    h: Sha256,
    order: [usize; N_COLUMNS],
}

impl RowHasher {
    pub(super) fn new() -> RowHasher {
        RowHasher {
            h: Sha256::new(),
            order: hash_order(),
        }
    }

    pub(super) fn row(&mut self, row: &RawRow<'_>) {
        for &i in &self.order {
            if let Some(v) = row.fields[i] {
                self.h.update(COLUMNS[i].as_bytes());
                self.h.update(b"=");
                self.h.update(v.as_bytes());
                self.h.update(b"\x1f");
            }
        }
        self.h.update(b"\n");
    }

    fn finish(self) -> String {
        hex::encode(self.h.finalize())
    }
}

/// The canonical name of a header cell, if it names a known column.
pub fn canonical_column(header: &str) -> Option<&'static str> {
    let h = header.trim().trim_start_matches('\u{feff}').to_lowercase();
    if let Some(c) = COLUMNS.iter().find(|c| **c == h) {
        return Some(c);
    }
    if h == "analyzed_at" {
        return Some("analysed_at");
    }
    ALIASES.iter().find(|(a, _)| *a == h).map(|(_, c)| *c)
}

/// One `malformed_batch` issue for a body that cannot be read at all.
pub(super) fn malformed(detail: String) -> Vec<Issue> {
    vec![Issue::batch(CheckCode::MalformedBatch, detail)]
}

/// Parses a CSV body, handing every row to `on_row` in order. Errors that make the whole body
/// unreadable (encoding, header) are returned as issues; an unreadable row is an issue on its
/// line, the others are still read (once there is an issue the body is refused, so later rows
/// are only read for their issues and no longer handed to `on_row`).
pub fn parse_csv(body: &[u8], on_row: &mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let text =
        std::str::from_utf8(body).map_err(|e| malformed(format!("the body is not UTF-8: {e}")))?;
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter(text))
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| malformed(format!("header row: {e}")))?
        .clone();
    let names: Vec<Option<&'static str>> = headers.iter().map(canonical_column).collect();
    let columns: Vec<Option<usize>> = names.iter().map(|n| n.and_then(column_index)).collect();
    let mut issues: Vec<Issue> = missing_columns(names.iter().flatten().copied());
    let mut hasher = RowHasher::new();
    let mut rows = 0usize;
    let mut record = ::csv::StringRecord::new();
    let mut lines = LineCounter::new(text);
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| lines.line_of(p.byte()));
                if record.iter().all(str::is_empty) {
                    continue;
                }
                if record.len() != headers.len() {
                    issues.push(Issue {
                        code: CheckCode::MalformedBatch,
                        line: Some(line),
                        column: None,
                        detail: format!(
                            "{} fields, the header has {}",
                            record.len(),
                            headers.len()
                        ),
                    });
                    continue;
                }
                rows += 1;
                if !issues.is_empty() {
                    continue;
                }
                let row = csv_row(line, &columns, &record);
                hasher.row(&row);
                on_row(&row);
            }
            Err(e) => {
                let line = e.position().map(|p| lines.line_of(p.byte()));
                issues.push(Issue {
                    code: CheckCode::MalformedBatch,
                    line,
                    column: None,
                    detail: format!("unreadable row: {e}"),
                });
                if line.is_none() {
                    break;
                }
            }
        }
    }
    finish(rows, hasher, issues)
}

/// The delimiter of a CSV body: a tab when its first line has more tabs than commas.
pub(super) fn delimiter(text: &str) -> u8 {
    let first_line = text.lines().next().unwrap_or("");
    if first_line.matches('\t').count() > first_line.matches(',').count() {
        b'\t'
    } else {
        b','
    }
}

/// The physical line of a byte offset, counted incrementally (offsets only grow).
struct LineCounter<'t> {
    bytes: &'t [u8],
    counted_to: usize,
    line_at: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t str) -> LineCounter<'t> {
        LineCounter {
            bytes: text.as_bytes(),
            counted_to: 0,
            line_at: 1,
        }
    }

    fn line_of(&mut self, byte: u64) -> u64 {
        // A record's position may point at the line break before it (CRLF): skip those.
        let bytes = self.bytes;
        let mut end = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
        while end < bytes.len() && (bytes[end] == b'\r' || bytes[end] == b'\n') {
            end += 1;
        }
        if end > self.counted_to {
            self.line_at += bytes[self.counted_to..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            self.counted_to = end;
        }
        self.line_at
    }
}

/// A CSV record as a [`RawRow`]: each cell under its column (`columns`: the column of each
/// header cell). A column named twice: the last non-empty value counts.
fn csv_row<'r>(
    line: u64,
    columns: &[Option<usize>],
    record: &'r ::csv::StringRecord,
) -> RawRow<'r> {
    let mut row = RawRow {
        line,
        fields: [None; N_COLUMNS],
    };
    for (col, value) in columns.iter().zip(record.iter()) {
        if let (Some(col), false) = (col, value.is_empty()) {
            row.fields[*col] = Some(value);
        }
    }
    row
}

/// Parses a JSON body: an array of row objects, or an object with a `rows` array. Values may
/// be strings, numbers, booleans or null. Rows are handed to `on_row` as [`parse_csv`] does.
pub fn parse_json(body: &[u8], on_row: &mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let list = match &value {
        Value::Array(a) => a,
        Value::Object(o) => match o.get("rows") {
            Some(Value::Array(a)) => a,
            _ => return Err(malformed("expected an object with a \"rows\" array".into())),
        },
        _ => return Err(malformed("expected an array of rows".into())),
    };
    let mut issues = Vec::new();
    let mut hasher = RowHasher::new();
    let mut rows = 0usize;
    let mut seen_columns = std::collections::BTreeSet::new();
    for (i, item) in list.iter().enumerate() {
        let line = i as u64 + 1;
        let Value::Object(obj) = item else {
            issues.push(Issue {
                code: CheckCode::MalformedBatch,
                line: Some(line),
                column: None,
                detail: "a row must be a JSON object".into(),
            });
            continue;
        };
        let mut texts: [Option<Cow<'_, str>>; N_COLUMNS] = std::array::from_fn(|_| None);
        for (k, v) in obj {
            let Some(col) = canonical_column(k) else {
                continue;
            };
            seen_columns.insert(col);
            let text: Cow<'_, str> = match v {
                Value::Null => continue,
                Value::String(s) => Cow::Borrowed(s.trim()),
                Value::Number(n) => Cow::Owned(n.to_string()),
                Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                _ => {
                    issues.push(Issue::row(
                        CheckCode::BadType,
                        line,
                        col,
                        "must be a string, number, boolean or null".into(),
                    ));
                    continue;
                }
            };
            if let (false, Some(i)) = (text.is_empty(), column_index(col)) {
                texts[i] = Some(text);
            }
        }
        rows += 1;
        if issues.is_empty() {
            hand_on(line, &texts, &mut hasher, on_row);
        }
    }
    if !list.is_empty() {
        issues.splice(0..0, missing_columns(seen_columns.into_iter()));
    }
    finish(rows, hasher, issues)
}

/// A row of texts (borrowed or owned) to the content hash and to `on_row`.
pub(super) fn hand_on(
    line: u64,
    texts: &[Option<Cow<'_, str>>; N_COLUMNS],
    hasher: &mut RowHasher,
    on_row: &mut dyn FnMut(&RawRow<'_>),
) {
    let row = RawRow {
        line,
        fields: std::array::from_fn(|i| texts[i].as_deref()),
    };
    hasher.row(&row);
    on_row(&row);
}

/// A `missing_column` issue (line 1) per required column not in `present`.
pub(super) fn missing_columns(present: impl Iterator<Item = &'static str>) -> Vec<Issue> {
    let present: Vec<&str> = present.collect();
    REQUIRED_COLUMNS
        .iter()
        .filter(|c| !present.contains(c))
        .map(|c| Issue {
            code: CheckCode::MissingColumn,
            line: Some(1),
            column: Some(c),
            detail: format!("the header has no {c} column"),
        })
        .collect()
}

/// The parse result, or every issue (`empty_batch` when there were no rows).
pub(super) fn finish(
    rows: usize,
    hasher: RowHasher,
    mut issues: Vec<Issue>,
) -> Result<Parsed, Vec<Issue>> {
    if rows == 0 && issues.is_empty() {
        issues.push(Issue::batch(CheckCode::EmptyBatch, "no rows".into()));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Parsed {
        rows,
        content_sha256: hasher.finish(),
    })
}

/// SHA-256 of the rows' canonical content: one line per row, `column=value` pairs in
/// column-name order separated by U+001F.
pub fn content_hash<'a>(rows: impl IntoIterator<Item = &'a RawRow<'a>>) -> String {
    let mut h = RowHasher::new();
    for r in rows {
        h.row(r);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "batch_id,lab_id,sample_id,point_id,sampled_at,depth_top_cm,depth_bottom_cm,ph,metal,value,unit,detected,mdl,method,qc_type,qc_ref";

    type Parser = fn(&[u8], &mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>>;

    /// A row's line and owned fields.
    type Row = (u64, Vec<Option<String>>);

    /// The rows and the parse result.
    fn read(parse: Parser, body: &[u8]) -> Result<(Vec<Row>, Parsed), Vec<Issue>> {
        let mut rows = Vec::new();
        let parsed = parse(body, &mut |r| {
            rows.push((
                r.line,
                r.fields.iter().map(|f| f.map(str::to_string)).collect(),
            ));
        })?;
        Ok((rows, parsed))
    }

    #[test]
    fn bom_crlf_quotes_tabs_and_chinese_headers_read_the_same() {
        let plain = format!(
            "{HEADER}\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,\"HJ 803, ICP-MS\",sample,\n"
        );
        let a = read(parse_csv, plain.as_bytes()).expect("plain");
        let bom_crlf = format!("\u{feff}{}", plain.replace('\n', "\r\n"));
        let b = read(parse_csv, bom_crlf.as_bytes()).expect("bom");
        let tabs = format!(
            "{}\nB1\tL1\tS1\tP1\t2026-01-01\t0\t20\t6.5\tCd\t0.3\tmg/kg\ttrue\t0.01\tHJ 803, ICP-MS\tsample\t\n",
            HEADER.replace(',', "\t")
        );
        let c = read(parse_csv, tabs.as_bytes()).expect("tabs");
        let zh = "批次号,实验室,样品编号,点位编号,采样时间,采样深度上限,采样深度下限,pH,检测项目,测定值,单位,是否检出,检出限,分析方法,质控类型,质控关联\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,\"HJ 803, ICP-MS\",sample,\n";
        let d = read(parse_csv, zh.as_bytes()).expect("zh");
        let method = column_index("method").expect("method");
        assert_eq!(a.0[0].1[method].as_deref(), Some("HJ 803, ICP-MS"));
        assert_eq!(a.0[0].0, 2);
        assert_eq!(a.1.rows, 1);
        for other in [&b, &c, &d] {
            assert_eq!(other.0, a.0);
            assert_eq!(other.1, a.1);
        }
    }

    #[test]
    fn json_rows_hash_like_csv() {
        let csv =
            format!("{HEADER}\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,M,sample,\n");
        let json = r#"{"rows":[{"batch_id":"B1","lab_id":"L1","sample_id":"S1","point_id":"P1",
            "sampled_at":"2026-01-01","depth_top_cm":0,"depth_bottom_cm":20,"ph":6.5,"metal":"Cd",
            "value":0.3,"unit":"mg/kg","detected":true,"mdl":0.01,"method":"M","qc_type":"sample",
            "qc_ref":null}]}"#;
        let a = read(parse_csv, csv.as_bytes()).expect("csv");
        let b = read(parse_json, json.as_bytes()).expect("json");
        assert_eq!(a.1.content_sha256, b.1.content_sha256);
        assert_eq!(a.0[0].1, b.0[0].1);
    }

    #[test]
    fn the_content_hash_is_that_of_the_canonical_text() {
        // The canonical content as the service has always hashed it: `column=value` pairs
        // of the non-empty fields in column-name order, U+001F after each, a line per row.
        let csv = format!(
            "{HEADER}\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,M,sample,\nB1,L1,BL,,,,,,Cd,0.001,mg/kg,,0.01,,blank,\n"
        );
        let (_, parsed) = read(parse_csv, csv.as_bytes()).expect("csv");
        let mut text = String::new();
        for line in csv.lines().skip(1) {
            let mut pairs: Vec<(&str, &str)> = HEADER
                .split(',')
                .zip(line.split(','))
                .filter(|(_, v)| !v.is_empty())
                .collect();
            pairs.sort();
            for (k, v) in pairs {
                text.push_str(&format!("{k}={v}\x1f"));
            }
            text.push('\n');
        }
        assert_eq!(parsed.content_sha256, hex::encode(Sha256::digest(text)));
    }

    #[test]
    fn unreadable_bodies_are_issues() {
        let e = read(parse_csv, b"\xff\xfe").unwrap_err();
        assert_eq!(e[0].code, CheckCode::MalformedBatch);
        let e = read(parse_csv, b"batch_id,value\nB1,1\n").unwrap_err();
        assert!(e.iter().all(|i| i.code == CheckCode::MissingColumn));
        assert_eq!(e.len(), 5);
        let e = read(parse_csv, format!("{HEADER}\n").as_bytes()).unwrap_err();
        assert_eq!(e[0].code, CheckCode::EmptyBatch);
        let e = read(parse_csv, format!("{HEADER}\nB1,L1\n").as_bytes()).unwrap_err();
        assert_eq!((e[0].code, e[0].line), (CheckCode::MalformedBatch, Some(2)));
        assert!(read(parse_json, b"{").is_err());
    }
}
