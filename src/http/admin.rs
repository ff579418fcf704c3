//! The admin JSON API beyond the registry reads: the quarantine browser and its replay.
//! Every route here is role `admin` only ([`AdminOnly`]).
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/quarantine?reason=&station=&since=&until=&status=&limit=` | entries, newest first |
//! | `GET /v1/quarantine/{id}` | one entry with its payload (`raw_text` when UTF-8, `raw_base64` always) and its replays |
//! | `POST /v1/quarantine/replay` `{"ids": [..]}` | the outcome of each replay |

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use chrono::Utc;
use serde_json::json;

use super::caller::{AdminOnly, Caller};
use super::openapi::{ApiRoutes, Method::*};
use super::{limit_of, listed, query_failed, ApiError, AppState};
use crate::ingest::replay::{self, ReplayError};
use crate::store::quarantine::{self, Filter};

/// The admin routes, merged into [`super::api_routes`].
pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .add(Get, "/v1/quarantine", "admin", "refused messages, newest first (filters: reason, station, since, until, status, limit)", list)
        .add(Post, "/v1/quarantine/replay", "admin", "replay messages {\"ids\": [..]}: the outcome of each", replay_ids)
        .add(Get, "/v1/quarantine/{id}", "admin", "one refused message with its payload and replays", show)
}

/// An optional RFC 3339 query parameter.
fn time_param(
    q: &HashMap<String, String>,
    key: &str,
) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| ApiError::BadRequest(format!("{key} must be RFC 3339").into())),
    }
}

/// The list's filter from the query string.
fn filter_of(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let open = match q.get("status").map(String::as_str) {
        None => None,
        Some("quarantined") => Some(true),
        Some("resolved") => Some(false),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "status must be quarantined or resolved".into(),
            ))
        }
    };
    Ok(Filter {
        reason: q.get("reason").cloned(),
        station: q.get("station").cloned(),
        since: time_param(q, "since")?,
        until: time_param(q, "until")?,
        open,
        limit: limit_of(q)?,
    })
}

async fn list(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let filter = filter_of(&q)?;
    let client = st.pool.get().await?;
    let entries = quarantine::list(&client, &filter)
        .await
        .map_err(query_failed("quarantine"))?;
    Ok(listed(entries, "entries"))
}

async fn show(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::NotFound("no such quarantine entry"))?;
    let client = st.pool.get().await?;
    let shown = quarantine::get(&client, id)
        .await
        .map_err(query_failed("quarantine entry"))?
        .ok_or(ApiError::NotFound("no such quarantine entry"))?;
    // The payload is data: as a JSON string when it is UTF-8 (JSON escaping keeps it inert;
    // a page must still render it as text), and always byte-exact in base64.
    let raw_text = std::str::from_utf8(&shown.raw).ok();
    let raw_base64 = base64::engine::general_purpose::STANDARD.encode(&shown.raw);
    Ok(Json(json!({
        "entry": shown.entry,
        "raw_text": raw_text,
        "raw_base64": raw_base64,
        "replays": shown.replays,
    }))
    .into_response())
}

/// The body of `POST /v1/quarantine/replay`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    ids: Vec<i64>,
}

async fn replay_ids(
    State(st): State<Arc<AppState>>,
    who: Caller<AdminOnly>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: ReplayBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("send {{\"ids\": [quarantine ids]}}: {e}").into())
    })?;
    if body.ids.is_empty() {
        return Err(ApiError::BadRequest("ids is empty".into()));
    }
    let mut client = st.pool.get().await?;
    let by = format!("api:{}", who.name);
    let results = replay::replay(&mut client, &st.settings, &st.standards, &body.ids, &by)
        .await
        .map_err(|e| match e {
            ReplayError::TooMany(_) => ApiError::BadRequest(e.to_string().into()),
            ReplayError::Store(e) => query_failed("quarantine replay")(e),
        })?;
    // Alerts and reject replies the replay queued.
    st.outbox.notify_one();
    Ok(listed(results, "results"))
}
