//! Reading a batch body into [`RawRow`]s: CSV (UTF-8 with or without BOM, comma or tab,
//! LF or CRLF, quoted fields, English or Chinese headers) or JSON (an array of objects, or
//! `{"rows": [...]}`, keyed by the same column names).

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{CheckCode, Issue, ParsedBatch, RawRow};

/// The template's columns, in order (`analysed_at` is optional and extra).
pub const COLUMNS: [&str; 17] = [
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
const ALIASES: [(&str, &str); 30] = [
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
];

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

fn malformed(detail: String) -> Vec<Issue> {
    vec![Issue::batch(CheckCode::MalformedBatch, detail)]
}

/// Parses a CSV body. Errors that make the whole body unreadable (encoding, header) are
/// returned as issues; an unreadable row is an issue on its line, the others are still read.
pub fn parse_csv(body: &[u8]) -> Result<ParsedBatch, Vec<Issue>> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let text =
        std::str::from_utf8(body).map_err(|e| malformed(format!("the body is not UTF-8: {e}")))?;
    let first_line = text.lines().next().unwrap_or("");
    let delimiter = if first_line.matches('\t').count() > first_line.matches(',').count() {
        b'\t'
    } else {
        b','
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| malformed(format!("header row: {e}")))?
        .clone();
    let columns: Vec<Option<&'static str>> = headers.iter().map(canonical_column).collect();
    let mut issues: Vec<Issue> = missing_columns(columns.iter().flatten().copied());
    let mut rows = Vec::new();
    let mut record = ::csv::StringRecord::new();
    // Physical line of a byte offset, counted incrementally (offsets only grow).
    let (mut counted_to, mut line_at) = (0usize, 1u64);
    let mut line_of = |byte: usize| -> u64 {
        // A record's position may point at the line break before it (CRLF): skip those.
        let bytes = text.as_bytes();
        let mut end = byte.min(bytes.len());
        while end < bytes.len() && (bytes[end] == b'\r' || bytes[end] == b'\n') {
            end += 1;
        }
        if end > counted_to {
            line_at += bytes[counted_to..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count() as u64;
            counted_to = end;
        }
        line_at
    };
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(0, |p| line_of(p.byte() as usize));
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
                let mut fields = BTreeMap::new();
                for (col, value) in columns.iter().zip(record.iter()) {
                    if let (Some(col), false) = (col, value.is_empty()) {
                        fields.insert(*col, value.to_string());
                    }
                }
                rows.push(RawRow { line, fields });
            }
            Err(e) => {
                let line = e.position().map(|p| line_of(p.byte() as usize));
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
    finish(rows, issues)
}

/// Parses a JSON body: an array of row objects, or an object with a `rows` array. Values may
/// be strings, numbers, booleans or null.
pub fn parse_json(body: &[u8]) -> Result<ParsedBatch, Vec<Issue>> {
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
    let mut rows = Vec::new();
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
        let mut fields = BTreeMap::new();
        for (k, v) in obj {
            let Some(col) = canonical_column(k) else {
                continue;
            };
            seen_columns.insert(col);
            let text = match v {
                Value::Null => continue,
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
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
            if !text.is_empty() {
                fields.insert(col, text);
            }
        }
        rows.push(RawRow { line, fields });
    }
    if !list.is_empty() {
        issues.splice(0..0, missing_columns(seen_columns.into_iter()));
    }
    finish(rows, issues)
}

fn missing_columns(present: impl Iterator<Item = &'static str>) -> Vec<Issue> {
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

fn finish(rows: Vec<RawRow>, mut issues: Vec<Issue>) -> Result<ParsedBatch, Vec<Issue>> {
    if rows.is_empty() && issues.is_empty() {
        issues.push(Issue::batch(CheckCode::EmptyBatch, "no rows".into()));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(ParsedBatch {
        content_sha256: content_hash(&rows),
        rows,
    })
}

/// SHA-256 of the rows' canonical content: one line per row, `column=value` pairs in
/// column-name order separated by U+001F.
pub fn content_hash(rows: &[RawRow]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        for (k, v) in &r.fields {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\x1f");
        }
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "batch_id,lab_id,sample_id,point_id,sampled_at,depth_top_cm,depth_bottom_cm,ph,metal,value,unit,detected,mdl,method,qc_type,qc_ref";

    #[test]
    fn bom_crlf_quotes_tabs_and_chinese_headers_read_the_same() {
        let plain = format!(
            "{HEADER}\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,\"HJ 803, ICP-MS\",sample,\n"
        );
        let a = parse_csv(plain.as_bytes()).expect("plain");
        let bom_crlf = format!("\u{feff}{}", plain.replace('\n', "\r\n"));
        let b = parse_csv(bom_crlf.as_bytes()).expect("bom");
        let tabs = format!(
            "{}\nB1\tL1\tS1\tP1\t2026-01-01\t0\t20\t6.5\tCd\t0.3\tmg/kg\ttrue\t0.01\tHJ 803, ICP-MS\tsample\t\n",
            HEADER.replace(',', "\t")
        );
        let c = parse_csv(tabs.as_bytes()).expect("tabs");
        let zh = "批次号,实验室,样品编号,点位编号,采样时间,采样深度上限,采样深度下限,pH,检测项目,测定值,单位,是否检出,检出限,分析方法,质控类型,质控关联\nB1,L1,S1,P1,2026-01-01,0,20,6.5,Cd,0.3,mg/kg,true,0.01,\"HJ 803, ICP-MS\",sample,\n";
        let d = parse_csv(zh.as_bytes()).expect("zh");
        assert_eq!(a.rows[0].get("method"), Some("HJ 803, ICP-MS"));
        assert_eq!(a.rows[0].line, 2);
        for other in [&b, &c, &d] {
            assert_eq!(other.rows, a.rows);
            assert_eq!(other.content_sha256, a.content_sha256);
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
        let a = parse_csv(csv.as_bytes()).expect("csv");
        let b = parse_json(json.as_bytes()).expect("json");
        assert_eq!(a.content_sha256, b.content_sha256);
    }

    #[test]
    fn unreadable_bodies_are_issues() {
        let e = parse_csv(b"\xff\xfe").unwrap_err();
        assert_eq!(e[0].code, CheckCode::MalformedBatch);
        let e = parse_csv(b"batch_id,value\nB1,1\n").unwrap_err();
        assert!(e.iter().all(|i| i.code == CheckCode::MissingColumn));
        assert_eq!(e.len(), 5);
        let e = parse_csv(format!("{HEADER}\n").as_bytes()).unwrap_err();
        assert_eq!(e[0].code, CheckCode::EmptyBatch);
        let e = parse_csv(format!("{HEADER}\nB1,L1\n").as_bytes()).unwrap_err();
        assert_eq!((e[0].code, e[0].line), (CheckCode::MalformedBatch, Some(2)));
        assert!(parse_json(b"{").is_err());
    }
}
