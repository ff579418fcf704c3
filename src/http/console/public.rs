//! The public disclosure page (no sign-in), per county (`/public/{county}`) and for the city
//! (`/public`): points by type, farmland soil screening tiers with the soil-only caveat, the
//! date of the data and the standards in force, and downloads of the points with their tier
//! as CSV (UTF-8 with BOM), xlsx and GeoJSON (RFC 7946)
//! (`/public/{city|county}/points.{csv|xlsx|geojson}`); and the key supervised enterprises
//! with their latest self-monitoring year and whether it exceeded (action plan §28), with
//! `/public/{city|county}/enterprises.{csv|xlsx}`.
//!
//! What is public is configuration (`[console.public]`): the point types listed, whether
//! values are shown, the decimal places of the coordinates, whether enterprises are listed. CSV and GeoJSON are streamed
//! row by row from the database (memory does not grow with the number of points); an xlsx
//! file is a zip whose directory comes last, so it is assembled in memory (constant-memory
//! worksheet mode) and then sent.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::StreamExt as _;
use serde::Serialize;

use super::data::{db, failed};
use super::export::{self, Cell};
use super::i18n::{self, Lang};
use super::pages::attachment;
use super::{render, PageError};
use crate::config::PublicConfig;
use crate::http::AppState;
use crate::store::console::{self, PublicPoint, PublicSummary};
use crate::store::enterprises::{self, Disclosure};

#[derive(Serialize)]
struct PublicPage<'a> {
    /// `city` or the county code (download links).
    scope: &'a str,
    county: Option<&'a str>,
    counties: &'a [String],
    summary: PublicSummary,
    show_values: bool,
    decimals: u32,
    /// The key supervised enterprises (`None` when `console.public.enterprises` is off).
    enterprises: Option<Vec<Disclosure>>,
}

/// `GET /public`: the city page.
pub async fn page_city(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    page(&st, i18n::lang_of(&headers), None).await
}

/// `GET /public/{county}`: one county's page (404 for a county not configured).
pub async fn page_county(
    State(st): State<Arc<AppState>>,
    Path(county): Path<String>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let lang = i18n::lang_of(&headers);
    let county = known_county(&st, &county, lang)?;
    page(&st, lang, county).await
}

/// `None` for `city`, the county for a configured county code, else 404.
fn known_county<'a>(st: &AppState, s: &'a str, lang: Lang) -> Result<Option<&'a str>, PageError> {
    if s == "city" {
        return Ok(None);
    }
    if st.settings.registry.counties.iter().any(|c| c == s) {
        Ok(Some(s))
    } else {
        Err(PageError::NotFound(lang))
    }
}

async fn page(st: &AppState, lang: Lang, county: Option<&str>) -> Result<Response, PageError> {
    let cfg = &st.settings.console.public;
    let client = db(st, lang).await?;
    let summary = console::public_summary(&client, county, &cfg.point_types)
        .await
        .map_err(failed(lang))?;
    let enterprises = if cfg.enterprises {
        Some(
            enterprises::disclosure(&client, county)
                .await
                .map_err(failed(lang))?,
        )
    } else {
        None
    };
    Ok(render(
        "public.html",
        lang,
        None,
        PublicPage {
            scope: county.unwrap_or("city"),
            county,
            counties: &st.settings.registry.counties,
            summary,
            show_values: cfg.show_values,
            decimals: cfg.coordinate_decimals,
            enterprises,
        },
    ))
}

/// `GET /public/{city|county}/points.{csv|xlsx|geojson}`.
pub async fn download(
    State(st): State<Arc<AppState>>,
    Path((scope, format)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let lang = i18n::lang_of(&headers);
    let county = known_county(&st, &scope, lang)?.map(str::to_string);
    let name = format!("soil-points-{scope}.{format}");
    match format.as_str() {
        "csv" => Ok(streamed(
            st,
            county,
            Format::Csv,
            "text/csv; charset=utf-8",
            &name,
        )),
        "geojson" => Ok(streamed(
            st,
            county,
            Format::GeoJson,
            "application/geo+json",
            &name,
        )),
        "xlsx" => xlsx(&st, county.as_deref(), lang, &name).await,
        _ => Err(PageError::NotFound(lang)),
    }
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    GeoJson,
}

/// The bytes that come before the first point.
fn start(format: Format, cfg: &PublicConfig) -> Vec<u8> {
    match format {
        Format::Csv => {
            let header: Vec<Cell> = export::public_header(cfg.show_values)
                .into_iter()
                .map(|h| Cell::Text(h.into()))
                .collect();
            let mut out = export::BOM.to_vec();
            out.extend(export::csv_line(&header));
            out
        }
        Format::GeoJson => export::GEOJSON_START.as_bytes().to_vec(),
    }
}

/// The bytes of one point (`first`: no separator before it).
fn encode(format: Format, cfg: &PublicConfig, p: &PublicPoint, first: bool) -> Vec<u8> {
    match format {
        Format::Csv => export::csv_line(&export::public_cells(
            p,
            cfg.coordinate_decimals,
            cfg.show_values,
        )),
        Format::GeoJson => {
            let f = export::geojson_feature(p, cfg.coordinate_decimals, cfg.show_values);
            let mut out = if first { Vec::new() } else { b",\n".to_vec() };
            out.extend(f.to_string().into_bytes());
            out
        }
    }
}

/// A response whose body a task writes point by point (at most 16 chunks in flight).
fn streamed(
    st: Arc<AppState>,
    county: Option<String>,
    format: Format,
    ctype: &'static str,
    name: &str,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        if let Err(e) = write_points(&st, county.as_deref(), format, &tx).await {
            // The client sees a truncated body (the status is already sent); logged.
            tracing::error!(error = %e, "public: download failed");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    let mut r = attachment(Vec::new(), ctype, name);
    *r.body_mut() = Body::from_stream(body);
    r
}

/// Writes the whole download into `tx`; stops early when the client went away.
async fn write_points(
    st: &AppState,
    county: Option<&str>,
    format: Format,
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), crate::store::StoreError> {
    let cfg = &st.settings.console.public;
    let client = st.pool.get().await?;
    if tx.send(Bytes::from(start(format, cfg))).await.is_err() {
        return Ok(());
    }
    let rows = console::public_points(&client, county, &cfg.point_types, cfg.show_values).await?;
    futures_util::pin_mut!(rows);
    let mut first = true;
    while let Some(p) = rows.next().await {
        let bytes = encode(format, cfg, &p?, first);
        first = false;
        if tx.send(Bytes::from(bytes)).await.is_err() {
            return Ok(());
        }
    }
    if let Format::GeoJson = format {
        let _ = tx
            .send(Bytes::from_static(export::GEOJSON_END.as_bytes()))
            .await;
    }
    Ok(())
}

/// The xlsx download (assembled, then sent).
async fn xlsx(
    st: &AppState,
    county: Option<&str>,
    lang: Lang,
    name: &str,
) -> Result<Response, PageError> {
    let cfg = &st.settings.console.public;
    let client = db(st, lang).await?;
    let rows = console::public_points(&client, county, &cfg.point_types, cfg.show_values)
        .await
        .map_err(failed(lang))?;
    futures_util::pin_mut!(rows);
    let mut cells = Vec::new();
    while let Some(p) = rows.next().await {
        let p = p.map_err(failed(lang))?;
        cells.push(export::public_cells(
            &p,
            cfg.coordinate_decimals,
            cfg.show_values,
        ));
    }
    let header = export::public_header(cfg.show_values);
    xlsx_response(&header, cells, lang, name)
}

/// An xlsx attachment of `header` and `rows` (not cached).
fn xlsx_response(
    header: &[&str],
    rows: Vec<Vec<Cell>>,
    lang: Lang,
    name: &str,
) -> Result<Response, PageError> {
    let book = export::xlsx(header, rows.into_iter()).map_err(|e| {
        tracing::error!(error = %e, "public: xlsx failed");
        PageError::Unavailable(lang)
    })?;
    let mut r = attachment(
        book,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        name,
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(r)
}

/// Header of the public enterprise download.
const ENTERPRISE_HEADER: &[&str] = &[
    "credit_code",
    "name",
    "industry",
    "county_code",
    "points",
    "latest_self_monitoring_year",
    "samples",
    "exceeded",
    "worst_level",
];

fn enterprise_cells(d: &Disclosure) -> Vec<Cell> {
    let text = |s: &str| Cell::Text(s.to_string());
    vec![
        text(&d.credit_code),
        text(&d.name),
        text(&d.industry),
        text(&d.county_code),
        Cell::Number(d.points as f64),
        d.latest_year.as_deref().map_or(Cell::Empty, text),
        Cell::Number(d.samples as f64),
        text(if d.exceeded { "true" } else { "false" }),
        d.worst_level.as_deref().map_or(Cell::Empty, text),
    ]
}

/// `GET /public/{city|county}/enterprises.{csv|xlsx}`: the key supervised enterprises with
/// their latest self-monitoring year and whether it exceeded (404 when
/// `console.public.enterprises` is off).
pub async fn enterprises_download(
    State(st): State<Arc<AppState>>,
    Path((scope, format)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let lang = i18n::lang_of(&headers);
    if !st.settings.console.public.enterprises {
        return Err(PageError::NotFound(lang));
    }
    let county = known_county(&st, &scope, lang)?;
    let client = db(&st, lang).await?;
    let list = enterprises::disclosure(&client, county)
        .await
        .map_err(failed(lang))?;
    let rows: Vec<Vec<Cell>> = list.iter().map(enterprise_cells).collect();
    let name = format!("key-enterprises-{scope}.{format}");
    match format.as_str() {
        "csv" => {
            let header: Vec<Cell> = ENTERPRISE_HEADER
                .iter()
                .map(|h| Cell::Text((*h).into()))
                .collect();
            let mut body = export::BOM.to_vec();
            body.extend(export::csv_line(&header));
            for r in &rows {
                body.extend(export::csv_line(r));
            }
            Ok(attachment(body, "text/csv; charset=utf-8", &name))
        }
        "xlsx" => xlsx_response(ENTERPRISE_HEADER, rows, lang, &name),
        _ => Err(PageError::NotFound(lang)),
    }
}
