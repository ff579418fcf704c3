//! Network management routes: monitoring coverage and overdue points, scoped to the
//! caller's counties (a bureau sees its own counties only).
//!
//! | route | roles | |
//! |---|---|---|
//! | `GET /v1/coverage` | `bureau`, `admin` | per county × point type × land use: points, sampled in their window, never sampled, overdue; per county the missing required point types |
//! | `GET /v1/overdue` | `bureau`, `admin` | points overdue as of the last check, with their metals |
//! | `GET /v1/enterprise/readings?limit=N` | `enterprise` | the readings of the caller's own points |
//! | `GET /v1/categories?format=json\|csv` | `bureau`, `admin` | farmland categories per county and point, evidence and history |

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;

use super::caller::{BureauOrAdmin, Caller, EnterpriseOnly};
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
}

/// The county codes a caller may see, within the registry's counties.
pub(crate) fn counties_of(st: &AppState, scope: &Scope) -> Vec<String> {
    let all = &st.settings.registry.counties;
    match scope {
        Scope::All => all.clone(),
        Scope::Counties(c) => all.iter().filter(|x| c.contains(x)).cloned().collect(),
    }
}

async fn coverage(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
) -> Result<Response, ApiError> {
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let report = store::network::coverage(&client, &st.obligations, &counties, Utc::now())
        .await
        .map_err(query_failed("coverage"))?;
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
    let csv = match q.get("format").map(String::as_str) {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::BadRequest("format must be json or csv".into())),
    };
    let counties = counties_of(&st, who.scope());
    let client = st.pool.get().await?;
    let report = store::crops::categories(&client, &st.crops, &counties)
        .await
        .map_err(query_failed("categories"))?;
    if csv {
        let mut body = store::crops::to_csv(&report).join("\n");
        body.push('\n');
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(report).into_response())
}

/// Refuses (403, `not_own_point`) a batch of enterprise `credit_code` that names a point not
/// registered as its own.
pub(crate) async fn check_own_points(
    st: &AppState,
    credit_code: &str,
    rows: &[crate::lab::LabRow],
) -> Result<(), ApiError> {
    let client = st.pool.get().await?;
    let own = store::enterprises::points_of(&client, credit_code)
        .await
        .map_err(query_failed("enterprise points"))?;
    let mut foreign: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.point_id.as_deref())
        .filter(|p| !own.iter().any(|o| o == p))
        .collect();
    foreign.sort_unstable();
    foreign.dedup();
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
