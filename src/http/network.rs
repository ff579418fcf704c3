//! Network management routes: monitoring coverage and overdue points, scoped to the
//! caller's counties (a bureau sees its own counties only).
//!
//! | route | roles | |
//! |---|---|---|
//! | `GET /v1/coverage?format=json\|xlsx` | `bureau`, `admin` | per county × point type × land use: points, sampled in their window, never sampled, overdue; per county the missing required point types |
//! | `GET /v1/overdue` | `bureau`, `admin` | points overdue as of the last check, with their metals |
//! | `GET /v1/enterprise/readings?limit=N` | `enterprise` | the readings of the caller's own points |
//! | `GET /v1/categories?format=json\|csv\|xlsx` | `bureau`, `admin` | farmland categories per county and point, evidence and history |
//! | `GET /v1/plots` | `bureau`, `admin` | development-land plots: points, status, status history |
//! | `GET /v1/plots/candidates` | `bureau`, `admin` | the land bureau's candidate list, with the deciding readings (proposals only) |

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;

use super::caller::{BureauOrAdmin, Caller, EnterpriseOnly};
use super::console::export::{self, Cell, ExportError};
use super::openapi::{ApiRoutes, Method::*};
use super::{listed, query_failed, ApiError, AppState};
use crate::store;
use crate::store::queries::Scope;

/// The network management routes (merged into [`super::api_routes`]).
pub fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .add(
            Get,
            "/v1/coverage",
            "bureau, admin",
            "monitoring coverage per county, point type and land use",
            coverage,
        )
        .add(
            Get,
            "/v1/overdue",
            "bureau, admin",
            "points overdue as of the last check",
            overdue,
        )
        .add(
            Get,
            "/v1/categories",
            "bureau, admin",
            "farmland categories per county and point (format=json|csv)",
            categories,
        )
        .add(
            Get,
            "/v1/enterprise/readings",
            "enterprise",
            "the readings of the caller's own points",
            enterprise_readings,
        )
        .add(
            Get,
            "/v1/plots",
            "bureau, admin",
            "development-land plots with their points and status (county-scoped)",
            plots,
        )
        .add(
            Get,
            "/v1/plots/candidates",
            "bureau, admin",
            "plots the land bureau should review, with the deciding readings; never applied",
            plot_candidates,
        )
}

/// The county codes a caller may see, within the registry's counties.
pub(crate) fn counties_of(st: &AppState, scope: &Scope) -> Vec<String> {
    let all = &st.settings.registry.counties;
    match scope {
        Scope::All => all.clone(),
        Scope::Counties(c) => all.iter().filter(|x| c.contains(x)).cloned().collect(),
    }
}

/// The export format a `format` parameter asks for (`json` when absent).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
    Xlsx,
}

fn format_of(q: &std::collections::HashMap<String, String>, csv: bool) -> Result<Format, ApiError> {
    match q.get("format").map(String::as_str) {
        None | Some("json") => Ok(Format::Json),
        Some("csv") if csv => Ok(Format::Csv),
        Some("xlsx") => Ok(Format::Xlsx),
        Some(_) if csv => Err(ApiError::BadRequest(
            "format must be json, csv or xlsx".into(),
        )),
        Some(_) => Err(ApiError::BadRequest("format must be json or xlsx".into())),
    }
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

fn xlsx_answer(book: Result<Vec<u8>, ExportError>, name: &str) -> Result<Response, ApiError> {
    let book = book.map_err(|e| {
        tracing::error!(error = %e, "xlsx export failed");
        ApiError::Internal("xlsx export failed")
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, XLSX.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        book,
    )
        .into_response())
}

/// The farmland categories as an xlsx workbook: one row per point and campaign
/// ([`store::crops::EXPORT_HEADER`]), and the counts per county on a second sheet.
pub fn categories_xlsx(report: &store::crops::Categories) -> Result<Vec<u8>, ExportError> {
    let rows: Vec<Vec<Cell>> = store::crops::rows(report)
        .into_iter()
        .map(|r| r.into_iter().map(Cell::Text).collect())
        .collect();
    let counts: Vec<Vec<Cell>> = report
        .counties
        .iter()
        .flat_map(|c| {
            c.counts.iter().map(|(outcome, n)| {
                vec![
                    Cell::Text(c.county_code.clone()),
                    Cell::Text(outcome.to_string()),
                    Cell::Number(*n as f64),
                ]
            })
        })
        .collect();
    export::xlsx_sheets(vec![
        ("categories", store::crops::EXPORT_HEADER, rows),
        ("counts", &["county_code", "outcome", "points"][..], counts),
    ])
}

/// The coverage report as an xlsx workbook: the cells, and per county the missing required
/// point types on a second sheet.
pub fn coverage_xlsx(report: &store::network::Coverage) -> Result<Vec<u8>, ExportError> {
    let n = |x: u32| Cell::Number(f64::from(x));
    let cells: Vec<Vec<Cell>> = report
        .cells
        .iter()
        .map(|c| {
            vec![
                Cell::Text(c.county_code.clone()),
                Cell::Text(c.point_type.clone()),
                Cell::Text(c.land_use.clone()),
                n(c.points),
                n(c.sampled_in_window),
                n(c.never_sampled),
                n(c.overdue),
            ]
        })
        .collect();
    let counties: Vec<Vec<Cell>> = report
        .counties
        .iter()
        .map(|c| {
            vec![
                Cell::Text(c.county_code.clone()),
                n(c.points),
                Cell::Text(c.complete.to_string()),
                Cell::Text(c.missing_point_types.join(";")),
            ]
        })
        .collect();
    export::xlsx_sheets(vec![
        (
            "coverage",
            &[
                "county_code",
                "point_type",
                "land_use",
                "points",
                "sampled_in_window",
                "never_sampled",
                "overdue",
            ][..],
            cells,
        ),
        (
            "counties",
            &["county_code", "points", "complete", "missing_point_types"][..],
            counties,
        ),
    ])
}

async fn coverage(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Query(q): super::Params,
) -> Result<Response, ApiError> {
    let format = format_of(&q, false)?;
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let report = store::network::coverage(&client, &st.obligations, &counties, Utc::now())
        .await
        .map_err(query_failed("coverage"))?;
    if format == Format::Xlsx {
        return xlsx_answer(coverage_xlsx(&report), "coverage.xlsx");
    }
    Ok(Json(report).into_response())
}

async fn overdue(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
) -> Result<Response, ApiError> {
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let items = store::network::overdue_list(&client, Some(&counties))
        .await
        .map_err(query_failed("overdue"))?;
    Ok(listed(items, "overdue"))
}

async fn categories(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Query(q): super::Params,
) -> Result<Response, ApiError> {
    let format = format_of(&q, true)?;
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let report = store::crops::categories(&client, &st.crops, &counties)
        .await
        .map_err(query_failed("categories"))?;
    if format == Format::Xlsx {
        return xlsx_answer(categories_xlsx(&report), "categories.xlsx");
    }
    if format == Format::Csv {
        let mut body = store::crops::to_csv(&report).join("\n");
        body.push('\n');
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(report).into_response())
}

/// Refuses (403, `not_own_point`) a batch of enterprise `credit_code` that names a point not
/// registered as its own, in any row (rows that fail their checks included: ownership is
/// decided before the row checks' 422).
pub(crate) async fn check_own_points(
    st: &AppState,
    credit_code: &str,
    point_ids: &std::collections::BTreeSet<String>,
) -> Result<(), ApiError> {
    let client = st.pool.get().await?;
    let own = store::enterprises::points_of(&client, credit_code)
        .await
        .map_err(query_failed("enterprise points"))?;
    // A BTreeSet iterates sorted and distinct.
    let foreign: Vec<&str> = point_ids
        .iter()
        .map(String::as_str)
        .filter(|p| !own.iter().any(|o| o == p))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    tracing::warn!(enterprise = credit_code, points = ?foreign, "lab upload refused: not the enterprise's own points");
    Err(ApiError::NotOwnPoints(foreign.join(", ")))
}

async fn enterprise_readings(
    State(st): State<Arc<AppState>>,
    who: Caller<EnterpriseOnly>,
    Query(q): super::Params,
) -> Result<Response, ApiError> {
    let limit = super::limit_of(&q)?;
    let client = st.pool.get().await?;
    let items = store::enterprises::own_readings(&client, &who.name, limit)
        .await
        .map_err(query_failed("enterprise readings"))?;
    Ok(listed(items, "readings"))
}

async fn plots(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
) -> Result<Response, ApiError> {
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let items = store::plots::list(&client, &counties)
        .await
        .map_err(query_failed("plots"))?;
    Ok(listed(items, "plots"))
}

async fn plot_candidates(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
) -> Result<Response, ApiError> {
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let items = store::plots::candidates(&client, &counties)
        .await
        .map_err(query_failed("plot candidates"))?;
    Ok(listed(items, "candidates"))
}
