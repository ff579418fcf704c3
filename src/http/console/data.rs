//! The JSON the console's scripts read, scoped like the API: the map's points, a point's
//! latest results (the popup), a point × metal series (the charts) and the live feed
//! (polled with `after`, the last outbox id seen). Typed response structs, ready for an
//! OpenAPI description.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use deadpool_postgres::Client;
use serde::{Deserialize, Serialize};

use super::i18n::Lang;
use super::{PageError, Viewer};
use crate::http::caller::BureauOrAdmin;
use crate::http::AppState;
use crate::store::console::{self, FeedItem, MapPoint, SampleRow};
use crate::store::StoreError;

/// Most samples one series answer carries (ten years of daily samples fit).
pub const SERIES_LIMIT: i64 = 20_000;

/// A pooled connection, or the page's 503.
pub async fn db(st: &AppState, lang: Lang) -> Result<Client, PageError> {
    st.pool
        .get()
        .await
        .map_err(|_| PageError::Unavailable(lang))
}

/// A store error as the page's 503 (logged).
pub fn failed(lang: Lang) -> impl Fn(StoreError) -> PageError {
    move |e| {
        tracing::error!(error = %e, "console: database error");
        PageError::Unavailable(lang)
    }
}

/// `GET /console/data/map`: every point of the viewer's counties, tier and open incidents.
pub async fn map_points(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
) -> Result<Json<Vec<MapPoint>>, PageError> {
    let client = db(&st, v.lang).await?;
    let points = console::map_points(&client, v.caller.scope())
        .await
        .map_err(failed(v.lang))?;
    Ok(Json(points))
}

/// The map popup's data.
#[derive(Debug, Serialize)]
pub struct Latest {
    /// The point.
    pub point: MapPoint,
    /// Newest reading of each metal, with the thresholds used.
    pub latest: Vec<SampleRow>,
}

/// `GET /console/data/points/{id}/latest`: 404 outside the viewer's counties.
pub async fn latest(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
) -> Result<Json<Latest>, PageError> {
    let client = db(&st, v.lang).await?;
    let point = console::point(&client, v.caller.scope(), &id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    let latest = console::latest_per_metal(&client, &id)
        .await
        .map_err(failed(v.lang))?;
    Ok(Json(Latest { point, latest }))
}

/// Query of a series.
#[derive(Debug, Deserialize)]
pub struct SeriesQuery {
    /// One metal (all when absent).
    pub metal: Option<String>,
}

/// `GET /console/data/points/{id}/series?metal=Cd`: oldest first, at most
/// [`SERIES_LIMIT`] (the newest); 404 outside the viewer's counties.
pub async fn series(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
    Query(q): Query<SeriesQuery>,
) -> Result<Json<Vec<SampleRow>>, PageError> {
    let client = db(&st, v.lang).await?;
    console::point(&client, v.caller.scope(), &id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    let rows = console::samples(&client, &id, q.metal.as_deref(), SERIES_LIMIT)
        .await
        .map_err(failed(v.lang))?;
    Ok(Json(rows))
}

/// Query of the feed.
#[derive(Debug, Deserialize)]
pub struct FeedQuery {
    /// Only events after this outbox id (0: the newest `limit`).
    #[serde(default)]
    pub after: i64,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

/// `GET /console/data/feed?after=ID`: alert events of the viewer's counties, newest first.
pub async fn feed(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Query(q): Query<FeedQuery>,
) -> Result<Json<Vec<FeedItem>>, PageError> {
    let client = db(&st, v.lang).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let items = console::feed(&client, v.caller.scope(), q.after, limit)
        .await
        .map_err(failed(v.lang))?;
    Ok(Json(items))
}
