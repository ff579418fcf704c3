//! Download encoders: CSV (UTF-8 with a BOM, so Excel opens Chinese text correctly; one
//! line at a time, for streaming), xlsx (rust_xlsxwriter, constant-memory worksheet) and
//! GeoJSON (RFC 7946: a FeatureCollection of Points, `[lon, lat]` in WGS 84 order, no
//! `crs` member; one feature at a time).
//!
//! Text cells that a spreadsheet would read as a formula (`=`, `+`, `@`, tab, CR first) are
//! prefixed with `'` in CSV and written as strings in xlsx, so a point name cannot run a
//! formula on an officer's machine.

use rust_xlsxwriter::{Workbook, XlsxError};
use serde_json::{json, Map, Value};

use crate::domain::metal::Metal;
use crate::store::console::{PublicPoint, SampleRow};

/// The UTF-8 byte order mark that starts every CSV download.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Errors of the encoders.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The xlsx writer failed.
    #[error("xlsx: {0}")]
    Xlsx(#[from] XlsxError),
}

/// One spreadsheet cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text.
    Text(String),
    /// A number.
    Number(f64),
    /// Nothing.
    Empty,
}

impl Cell {
    fn csv(&self) -> String {
        match self {
            Cell::Text(s) => defuse(s),
            Cell::Number(x) => x.to_string(),
            Cell::Empty => String::new(),
        }
    }
}

fn text(s: &str) -> Cell {
    Cell::Text(s.to_string())
}

fn opt_num(x: Option<f64>) -> Cell {
    x.map_or(Cell::Empty, Cell::Number)
}

/// A text that a spreadsheet would take for a formula, made inert.
fn defuse(s: &str) -> String {
    if s.starts_with(['=', '+', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

/// One CSV line (RFC 4180 quoting, CRLF-free: `\n` line ends).
pub fn csv_line(cells: &[Cell]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing into a Vec cannot fail.
    let _ = w.write_record(cells.iter().map(Cell::csv));
    w.into_inner().unwrap_or_default()
}

/// An xlsx workbook of one sheet: `header`, then `rows`.
pub fn xlsx(
    header: &[&str],
    rows: impl Iterator<Item = Vec<Cell>>,
) -> Result<Vec<u8>, ExportError> {
    let mut book = Workbook::new();
    write_sheet(&mut book, None, header, rows)?;
    Ok(book.save_to_buffer()?)
}

/// One named sheet of [`xlsx_sheets`]: name, header, rows.
pub type Sheet<'a> = (&'a str, &'a [&'a str], Vec<Vec<Cell>>);

/// An xlsx workbook of several named sheets, each a header and its rows.
pub fn xlsx_sheets(sheets: Vec<Sheet<'_>>) -> Result<Vec<u8>, ExportError> {
    let mut book = Workbook::new();
    for (name, header, rows) in sheets {
        write_sheet(&mut book, Some(name), header, rows.into_iter())?;
    }
    Ok(book.save_to_buffer()?)
}

fn write_sheet(
    book: &mut Workbook,
    name: Option<&str>,
    header: &[&str],
    rows: impl Iterator<Item = Vec<Cell>>,
) -> Result<(), ExportError> {
    let sheet = book.add_worksheet_with_constant_memory();
    if let Some(name) = name {
        sheet.set_name(name)?;
    }
    for (c, h) in header.iter().enumerate() {
        sheet.write_string(0, c as u16, *h)?;
    }
    for (r, row) in rows.enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Text(s) => sheet.write_string(r, c, s)?,
                Cell::Number(x) => sheet.write_number(r, c, *x)?,
                Cell::Empty => sheet,
            };
        }
    }
    Ok(())
}

/// Header of the samples download of a point.
pub const SAMPLE_HEADER: &[&str] = &[
    "sampled_at",
    "metal",
    "value_mgkg",
    "detected",
    "level",
    "screening_mgkg",
    "intervention_mgkg",
    "standard",
    "ph",
    "ph_band",
    "ph_assumed",
    "source",
    "source_id",
];

/// The cells of one sample (in [`SAMPLE_HEADER`] order).
pub fn sample_cells(s: &SampleRow) -> Vec<Cell> {
    vec![
        text(&s.sampled_at.to_rfc3339()),
        text(&s.metal),
        Cell::Number(s.value_mgkg),
        text(if s.detected { "true" } else { "false" }),
        text(&s.level),
        opt_num(s.screening_mgkg),
        opt_num(s.intervention_mgkg),
        s.standard.as_deref().map_or(Cell::Empty, text),
        opt_num(s.ph),
        s.ph_band.as_deref().map_or(Cell::Empty, text),
        text(if s.ph_assumed { "true" } else { "false" }),
        text(&s.source),
        text(&s.source_id),
    ]
}

/// A coordinate rounded to `decimals` places (what the public downloads publish).
pub fn round_coord(x: f64, decimals: u32) -> f64 {
    let f = 10f64.powi(decimals as i32);
    (x * f).round() / f
}

/// Header of the public points download (the metal columns only when values are public).
pub fn public_header(show_values: bool) -> Vec<&'static str> {
    let mut h = vec![
        "point_id",
        "name",
        "county_code",
        "point_type",
        "land_use",
        "lon",
        "lat",
        "soil_tier",
        "latest_sample",
    ];
    if show_values {
        h.extend(Metal::ALL.iter().map(|m| m.symbol()));
    }
    h
}

/// The cells of one public point (in [`public_header`] order).
pub fn public_cells(p: &PublicPoint, decimals: u32, show_values: bool) -> Vec<Cell> {
    let mut cells = vec![
        text(&p.point_id),
        text(&p.name),
        text(&p.county_code),
        text(&p.point_type),
        text(&p.land_use),
        Cell::Number(round_coord(p.lon, decimals)),
        Cell::Number(round_coord(p.lat, decimals)),
        p.tier.as_deref().map_or(Cell::Empty, text),
        p.latest_sample
            .map_or(Cell::Empty, |t| text(&t.format("%Y-%m-%d").to_string())),
    ];
    if show_values {
        cells.extend(
            Metal::ALL
                .iter()
                .map(|m| opt_num(p.values.get(m.symbol()).and_then(Value::as_f64))),
        );
    }
    cells
}

/// The start of a GeoJSON FeatureCollection (features follow, comma-separated).
pub const GEOJSON_START: &str = "{\"type\":\"FeatureCollection\",\"features\":[\n";
/// Its end.
pub const GEOJSON_END: &str = "\n]}\n";

/// One RFC 7946 Feature of a public point.
pub fn geojson_feature(p: &PublicPoint, decimals: u32, show_values: bool) -> Value {
    let mut props = Map::new();
    props.insert("point_id".into(), json!(p.point_id));
    props.insert("name".into(), json!(p.name));
    props.insert("county_code".into(), json!(p.county_code));
    props.insert("point_type".into(), json!(p.point_type));
    props.insert("land_use".into(), json!(p.land_use));
    props.insert("soil_tier".into(), json!(p.tier));
    props.insert(
        "latest_sample".into(),
        json!(p.latest_sample.map(|t| t.format("%Y-%m-%d").to_string())),
    );
    if show_values {
        props.insert("values_mgkg".into(), p.values.clone());
    }
    json!({
        "type": "Feature",
        "geometry": {
            "type": "Point",
            "coordinates": [round_coord(p.lon, decimals), round_coord(p.lat, decimals)],
        },
        "properties": props,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point() -> PublicPoint {
        PublicPoint {
            point_id: "441781-B-0001".into(),
            name: "=HYPERLINK(\"x\"),阳春".into(),
            county_code: "441781".into(),
            lon: 111.787654,
            lat: 22.171234,
            point_type: "basic".into(),
            land_use: "paddy".into(),
            tier: Some("safe_utilisation".into()),
            latest_sample: None,
            values: json!({"Cd": 0.45}),
        }
    }

    #[test]
    fn coordinates_are_rounded_and_formulas_defused() {
        let p = point();
        let line = String::from_utf8(csv_line(&public_cells(&p, 2, false))).unwrap_or_default();
        assert!(line.contains(",111.79,22.17,"), "{line}");
        assert!(line.contains("\"'=HYPERLINK(\"\"x\"\"),阳春\""), "{line}");
        let f = geojson_feature(&p, 3, true);
        assert_eq!(f["geometry"]["coordinates"], json!([111.788, 22.171]));
        assert_eq!(f["properties"]["values_mgkg"]["Cd"], json!(0.45));
        assert!(geojson_feature(&p, 3, false)["properties"]
            .get("values_mgkg")
            .is_none());
    }

    #[test]
    fn an_xlsx_is_a_zip() {
        let book = xlsx(
            &["a", "b"],
            [vec![text("x"), Cell::Number(1.5)]].into_iter(),
        );
        let bytes = book.unwrap_or_default();
        assert!(bytes.starts_with(b"PK"));
    }
}
