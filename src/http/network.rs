//! Network management routes: monitoring coverage and overdue points, scoped to the
//! caller's counties (a bureau sees its own counties only).
//!
//! | route | roles | |
//! |---|---|---|
//! | `GET /v1/coverage` | `bureau`, `admin` | per county × point type × land use: points, sampled in their window, never sampled, overdue; per county the missing required point types |
//! | `GET /v1/overdue` | `bureau`, `admin` | points overdue as of the last check, with their metals |

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;

use super::caller::{BureauOrAdmin, Caller};
use super::{listed, query_failed, ApiError, AppState};
use crate::store;
use crate::store::queries::Scope;

/// The network management routes (merged into [`super::router`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/coverage", get(coverage))
        .route("/v1/overdue", get(overdue))
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
