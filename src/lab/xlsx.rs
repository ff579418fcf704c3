//! Reading an Excel (.xlsx) batch into [`RawRow`]s with `calamine`: the first sheet of the
//! workbook, its first non-empty row the header (the same column names and Chinese aliases as
//! the CSV template), one result per row below it.
//!
//! Each cell becomes the text a CSV of the same sheet would carry, and from there the rows
//! take exactly the CSV path: the same checks, and the same content hash (taken over the
//! trimmed texts of the canonical columns; a sheet whose cells show the same texts as a CSV
//! hashes the same). How cells read:
//!
//! - text: trimmed, as in a CSV;
//! - numbers: the shortest decimal of the value at Excel's 15 significant digits (`42`,
//!   `0.55`; a formula's `0.30000000000000004` reads `0.3`);
//! - booleans: `true` / `false`;
//! - date cells: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (the shortest that
//!   keeps the value), read as UTC+8 like a date without offset in a CSV. A date typed as a
//!   bare number (an Excel serial such as `46346.4` whose date format was lost) is **not**
//!   guessed: it fails the date check (`bad_timestamp`), because a serial cannot be told from
//!   a typo;
//! - formula errors (`#DIV/0!`, `#N/A`, …) and durations: a `bad_type` issue on that cell.
//!
//! Line numbers are the sheet's row numbers (as Excel shows them). A body that is not an
//! xlsx workbook (not a zip, or a zip without a workbook) is one `malformed_batch` issue.

use std::borrow::Cow;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

use super::csv::{
    canonical_column, column_index, finish, hand_on, malformed, missing_columns, RowHasher,
};
use super::{CheckCode, Issue, LabError, Parsed, RawRow, N_COLUMNS};

/// The content type of an xlsx upload.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Parses an xlsx body's first sheet, handing every row to `on_row` in order, as
/// [`super::csv::parse_csv`] does for a CSV body.
pub fn parse_xlsx(body: &[u8], on_row: &mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>> {
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(body))
        .map_err(|e| malformed(format!("not an xlsx workbook: {e}")))?;
    let sheets = book.sheet_names();
    let Some(sheet) = sheets.first().cloned() else {
        return Err(malformed("the workbook has no sheet".into()));
    };
    let range = book
        .worksheet_range(&sheet)
        .map_err(|e| malformed(format!("sheet \"{sheet}\" is unreadable: {e}")))?;
    // Row numbers as Excel shows them: the range starts at its first non-empty cell.
    let first_row = u64::from(range.start().map_or(0, |(row, _)| row)) + 1;
    let mut rows_of = range.rows();
    let Some(header) = rows_of.next() else {
        return Err(vec![Issue::batch(
            CheckCode::EmptyBatch,
            format!("sheet \"{sheet}\" is empty"),
        )]);
    };
    let columns: Vec<Option<usize>> = header
        .iter()
        .map(|c| match c {
            Data::String(s) => canonical_column(s).and_then(column_index),
            _ => None,
        })
        .collect();
    let mut issues = missing_columns(columns.iter().flatten().map(|i| super::csv::COLUMNS[*i]));
    for i in &mut issues {
        i.line = Some(first_row);
        i.detail = format!(
            "sheet \"{sheet}\" (the first of {} sheets): {}",
            sheets.len(),
            i.detail
        );
    }
    let mut hasher = RowHasher::new();
    let mut rows = 0usize;
    for (n, cells) in rows_of.enumerate() {
        let line = first_row + 1 + n as u64;
        let mut texts: [Option<Cow<'_, str>>; N_COLUMNS] = std::array::from_fn(|_| None);
        let mut blank = true;
        for (col, cell) in columns.iter().zip(cells) {
            let text = cell_text(cell);
            blank &= matches!(&text, Ok(t) if t.is_empty());
            let Some(col) = col else {
                continue;
            };
            match text {
                Ok(t) if t.is_empty() => {}
                Ok(t) => texts[*col] = Some(t),
                Err(detail) => issues.push(Issue::row(
                    CheckCode::BadType,
                    line,
                    super::csv::COLUMNS[*col],
                    detail,
                )),
            }
        }
        if blank {
            continue;
        }
        rows += 1;
        if issues.is_empty() {
            hand_on(line, &texts, &mut hasher, on_row);
        }
    }
    finish(rows, hasher, issues)
}

/// The text of a cell (see the module docs), or why it has none.
fn cell_text(cell: &Data) -> Result<Cow<'_, str>, String> {
    Ok(match cell {
        Data::Empty => Cow::Borrowed(""),
        Data::String(s) => Cow::Borrowed(s.trim()),
        Data::Int(i) => Cow::Owned(i.to_string()),
        Data::Float(f) => Cow::Owned(number_text(*f)),
        Data::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Data::DateTime(d) if d.is_duration() => {
            return Err(format!("a duration ({}), not a value", d.as_f64()))
        }
        Data::DateTime(d) => match d.as_datetime() {
            Some(t) => Cow::Owned(date_text(t)),
            None => return Err(format!("an unreadable date (serial {})", d.as_f64())),
        },
        Data::DateTimeIso(s) => Cow::Borrowed(s.trim()),
        Data::DurationIso(s) => return Err(format!("a duration ({s}), not a value")),
        Data::Error(e) => return Err(format!("the cell holds the formula error {e}")),
    })
}

/// A number as Excel shows it: rounded to 15 significant digits, shortest decimal form.
fn number_text(f: f64) -> String {
    let rounded: f64 = format!("{f:.14e}").parse().unwrap_or(f);
    rounded.to_string()
}

/// A date cell's value as text: `YYYY-MM-DD[ HH:MM[:SS]]`.
fn date_text(t: chrono::NaiveDateTime) -> String {
    use chrono::Timelike;
    let fmt = if t.second() != 0 {
        "%Y-%m-%d %H:%M:%S"
    } else if t.hour() != 0 || t.minute() != 0 {
        "%Y-%m-%d %H:%M"
    } else {
        "%Y-%m-%d"
    };
    t.format(fmt).to_string()
}

/// How [`csv_to_xlsx`] writes a column's cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CellKind {
    Text,
    Number,
    Boolean,
    Date,
}

fn kind_of(column: Option<&str>) -> CellKind {
    match column {
        Some("depth_top_cm" | "depth_bottom_cm" | "ph" | "value" | "mdl") => CellKind::Number,
        Some("detected") => CellKind::Boolean,
        Some("sampled_at" | "analysed_at") => CellKind::Date,
        _ => CellKind::Text,
    }
}

/// A CSV batch (or the header-only template) as an xlsx workbook of one sheet, `batch`, the
/// way a lab keeps it in Excel: numbers as numbers, `detected` as booleans, dates without
/// offset as date cells (`yyyy-mm-dd hh:mm`), everything else as text. Read back with
/// [`parse_xlsx`], a CSV whose numbers are written as Excel shows them (`42`, not `42.0`)
/// gives the same rows and the same content hash.
pub fn csv_to_xlsx(body: &[u8]) -> Result<Vec<u8>, LabError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let text = String::from_utf8_lossy(body);
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(super::csv::delimiter(&text))
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let kinds: Vec<CellKind> = headers
        .iter()
        .map(|h| kind_of(canonical_column(h)))
        .collect();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("batch")?;
    let bold = Format::new().set_bold();
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm");
    let day = Format::new().set_num_format("yyyy-mm-dd");
    for (c, h) in (0u16..).zip(headers.iter()) {
        sheet.write_string_with_format(0, c, h, &bold)?;
        sheet.set_column_width(c, 16)?;
    }
    for (r, record) in (1u32..).zip(reader.records()) {
        let record = record?;
        for ((c, text), kind) in (0u16..).zip(record.iter()).zip(&kinds) {
            if text.is_empty() {
                continue;
            }
            let number = text.parse::<f64>().ok().filter(|n| n.is_finite());
            match (kind, text) {
                (CellKind::Number, _) if number.is_some() => {
                    sheet.write_number(r, c, number.unwrap_or_default())?
                }
                (CellKind::Boolean, "true" | "false") => {
                    sheet.write_boolean(r, c, text == "true")?
                }
                (CellKind::Date, t) => match excel_date(t) {
                    Some((d, true)) => sheet.write_datetime_with_format(r, c, &d, &day)?,
                    Some((d, false)) => sheet.write_datetime_with_format(r, c, &d, &date)?,
                    None => sheet.write_string(r, c, t)?,
                },
                _ => sheet.write_string(r, c, text)?,
            };
        }
    }
    Ok(book.save_to_buffer()?)
}

/// A date without offset (`YYYY-MM-DD[ HH:MM[:SS]]`) as an Excel date, and whether it is a
/// day only; `None` for anything else (written as text).
fn excel_date(text: &str) -> Option<(ExcelDateTime, bool)> {
    use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
    let (t, day_only) = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| (t, false))
        .or_else(|| {
            let d = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
            Some((d.and_hms_opt(0, 0, 0)?, true))
        })?;
    let d = ExcelDateTime::from_ymd(
        u16::try_from(t.year()).ok()?,
        u8::try_from(t.month()).ok()?,
        u8::try_from(t.day()).ok()?,
    )
    .ok()?
    .and_hms(
        u16::try_from(t.hour()).ok()?,
        u8::try_from(t.minute()).ok()?,
        t.second(),
    )
    .ok()?;
    Some((d, day_only))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_excel_shows_them() {
        assert_eq!(number_text(42.0), "42");
        assert_eq!(number_text(0.55), "0.55");
        assert_eq!(number_text(0.1 + 0.2), "0.3");
        assert_eq!(number_text(0.002), "0.002");
        assert_eq!(number_text(548.0), "548");
    }

    #[test]
    fn dates_keep_only_the_parts_they_have() {
        let d = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S");
        assert_eq!(
            d("2026-11-20 09:30:00").map(date_text).ok().as_deref(),
            Some("2026-11-20 09:30")
        );
        assert_eq!(
            d("2026-11-20 00:00:00").map(date_text).ok().as_deref(),
            Some("2026-11-20")
        );
        assert_eq!(
            d("2026-11-20 09:30:15").map(date_text).ok().as_deref(),
            Some("2026-11-20 09:30:15")
        );
    }

    #[test]
    fn a_body_that_is_no_workbook_is_one_malformed_issue() {
        let e = parse_xlsx(b"batch_id,lab_id\n", &mut |_| {}).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].code, CheckCode::MalformedBatch);
        assert!(
            e[0].detail.contains("not an xlsx workbook"),
            "{}",
            e[0].detail
        );
    }

    /// The shipped example batch as CSV, as JSON (numbers as JSON numbers) and as xlsx
    /// (typed cells): the same rows and the same content hash.
    #[test]
    fn the_same_content_as_csv_json_or_xlsx_hashes_the_same() {
        use crate::lab::csv::{parse_csv, parse_json};
        let csv = include_bytes!("../../config/lab/example-batch.csv");
        type Rows = Vec<Vec<Option<String>>>;
        type Parse<'a> = &'a dyn Fn(&mut dyn FnMut(&RawRow<'_>)) -> Result<Parsed, Vec<Issue>>;
        fn collect(parse: Parse<'_>) -> (Rows, String) {
            let mut rows: Rows = Vec::new();
            let parsed = parse(&mut |r: &RawRow<'_>| {
                rows.push(r.fields.iter().map(|f| f.map(str::to_string)).collect());
            })
            .expect("parses");
            (rows, parsed.content_sha256)
        }
        let from_csv = collect(&|on_row| parse_csv(csv, on_row));
        assert_eq!(from_csv.0.len(), 17);

        let xlsx = csv_to_xlsx(csv).expect("writes");
        let from_xlsx = collect(&|on_row| parse_xlsx(&xlsx, on_row));
        assert_eq!(from_xlsx, from_csv);

        // JSON with numbers and booleans as JSON values, not strings.
        let text = std::str::from_utf8(csv).expect("utf-8");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().expect("header").split(',').collect();
        let rows: Vec<serde_json::Value> = lines
            .map(|line| {
                let obj: serde_json::Map<String, serde_json::Value> = header
                    .iter()
                    .zip(line.split(','))
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| {
                        let typed: Option<serde_json::Value> = match kind_of(Some(*k)) {
                            CellKind::Number | CellKind::Boolean => serde_json::from_str(v).ok(),
                            _ => None,
                        };
                        (k.to_string(), typed.unwrap_or_else(|| v.into()))
                    })
                    .collect();
                serde_json::Value::Object(obj)
            })
            .collect();
        let json = serde_json::to_vec(&rows).expect("json");
        let from_json = collect(&|on_row| parse_json(&json, on_row));
        assert_eq!(from_json, from_csv);
    }

    #[test]
    fn formula_errors_and_durations_are_refused() {
        let e = cell_text(&Data::Error(calamine::CellErrorType::Div0)).unwrap_err();
        assert!(e.contains("#DIV/0!"), "{e}");
        assert!(cell_text(&Data::DurationIso("PT1H".into())).is_err());
        assert_eq!(cell_text(&Data::Bool(false)).ok().as_deref(), Some("false"));
        assert_eq!(cell_text(&Data::Int(7)).ok().as_deref(), Some("7"));
    }

    /// Lines are the sheet's row numbers (the header on row 3 here), and a date typed as a
    /// bare Excel serial reads as the number, which the date check refuses.
    #[test]
    fn lines_are_sheet_rows_and_serials_are_not_dates() {
        let mut book = Workbook::new();
        let sheet = book.add_worksheet();
        let header = include_str!("../../config/lab/template.csv").trim();
        for (c, h) in (0u16..).zip(header.split(',')) {
            sheet.write_string(2, c, h).expect("header");
        }
        sheet.write_string(3, 0, "B1").expect("cell");
        sheet.write_number(3, 4, 46346.4).expect("serial");
        sheet.write_string(5, 0, "B1").expect("cell");
        let bytes = book.save_to_buffer().expect("xlsx");
        let mut seen = Vec::new();
        let parsed = parse_xlsx(&bytes, &mut |r| {
            seen.push((r.line, r.get("sampled_at").map(str::to_string)))
        });
        assert!(parsed.is_ok(), "{parsed:?}");
        assert_eq!(
            seen,
            vec![(4, Some("46346.4".to_string())), (6, None)],
            "row 5 is blank and skipped"
        );
        assert!(crate::lab::checks::parse_time("46346.4").is_none());
    }

    /// A workbook whose first sheet is not a batch: the missing columns, naming the sheet.
    #[test]
    fn the_wrong_sheet_is_named_in_the_issues() {
        let mut book = Workbook::new();
        let notes = book.add_worksheet();
        notes.set_name("说明").expect("name");
        notes.write_string(0, 0, "readme").expect("cell");
        let batch = book.add_worksheet();
        batch.write_string(0, 0, "batch_id").expect("cell");
        let bytes = book.save_to_buffer().expect("xlsx");
        let e = parse_xlsx(&bytes, &mut |_| {}).unwrap_err();
        assert!(
            e.iter().all(|i| i.code == CheckCode::MissingColumn),
            "{e:?}"
        );
        assert!(e[0].detail.contains("说明"), "{}", e[0].detail);
    }
}
