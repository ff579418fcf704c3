//! The HTTP adapter (axum): lab batch uploads and reports, bureau and admin reads, health,
//! readiness and metrics.
//!
//! | route | roles | |
//! |---|---|---|
//! | `POST /v1/lab/batches` | `lab` | CSV or JSON batch → 201 / 200 (replay) / 409 / 413 / 422 |
//! | `GET /v1/lab/batches/{batch_id}` | `lab`, `admin` | status and stored report |
//! | `GET /v1/alerts?since=RFC3339&limit=N` | `bureau`, `admin` | alert events of the caller's counties |
//! | `GET /v1/incidents?open=true&limit=N` | `bureau`, `admin` | incidents of the caller's counties |
//! | `GET /v1/points/{id}/readings?limit=N` | `bureau`, `admin` | 404 for a point outside the caller's counties |
//! | `GET /v1/points` | `admin` | the point registry |
//! | `GET /v1/stations`, `GET /v1/bureaus` | `admin` | broker identities (no secrets) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | none | |
//!
//! Every request passes [`gate`]: the bearer token is checked (the principal is handed to the
//! handler), the per-identity rate limit and the request timeout are applied, and one log
//! line records identity, role, method, path, status and duration. A missing or invalid
//! token gets 401, a valid token of the wrong role 403.

pub mod auth;
pub mod client;
pub mod metrics;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::Utc;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::domain::standard::Standards;
use crate::lab::checks::CheckContext;
use crate::lab::{self, Report};
use crate::registry::SharedRegistry;
use crate::store;
use crate::store::identities::IdentityKind;
use crate::store::lab::{LabContext, Outcome};
use auth::{Principal, Role, TokenStore};

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Serving failed.
    #[error("http server: {0}")]
    Serve(#[from] std::io::Error),
}

/// Shared state of the handlers.
pub struct AppState {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Database pool.
    pub pool: Pool,
    /// Current registry snapshot (refreshed by the service).
    pub registry: SharedRegistry,
    /// Standards in force.
    pub standards: Arc<Standards>,
    /// Wakes the alert publisher after a batch queued alerts.
    pub outbox: Arc<Notify>,
    /// API tokens (re-read when the file changes).
    pub tokens: TokenStore,
    /// Prometheus renderer (absent when no recorder could be installed).
    pub metrics: Option<PrometheusHandle>,
    /// Per-identity request budgets.
    pub limiter: RateLimiter,
}

/// A token bucket per identity name: `per_minute` requests of burst, refilled at
/// `per_minute` per minute. `per_minute == 0` turns it off.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per minute per identity (0: unlimited).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `who`'s bucket; `Err(seconds)` to wait when it is empty.
    pub fn take(&self, who: &str) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(self.per_minute);
        let rate = cap / 60.0;
        let now = Instant::now();
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(p) => p.into_inner(),
        };
        let (tokens, last) = buckets.entry(who.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/lab/batches", post(upload))
        .route("/v1/lab/batches/{batch_id}", get(batch))
        .route("/v1/alerts", get(alerts))
        .route("/v1/incidents", get(incidents))
        .route("/v1/points", get(points))
        .route("/v1/points/{point_id}/readings", get(point_readings))
        .route("/v1/stations", get(stations))
        .route("/v1/bureaus", get(bureaus))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled. If the address is taken the bind is retried (the
/// MQTT side of the service keeps running meanwhile).
pub async fn serve(state: Arc<AppState>, shutdown: CancellationToken) -> Result<(), HttpError> {
    let addr = state.settings.http.addr.clone();
    let listener = loop {
        match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => break l,
            Err(e) => {
                error!(%addr, error = %e, "http: cannot bind; retrying in 5 s (MQTT ingestion continues)");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    };
    info!(%addr, tokens = state.tokens.len(), "http: listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Authentication, rate limit, timeout and the access log, around every route.
async fn gate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let who = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .and_then(|t| st.tokens.check(t));
    let (name, role) = who.as_ref().map_or(("-".to_string(), "-"), |p| {
        (p.name.clone(), p.role.as_str())
    });
    let limited = who.as_ref().and_then(|p| st.limiter.take(&p.name).err());
    let response = if let Some(wait) = limited {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded (http.rate_limit_per_minute)",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        r
    } else {
        if let Some(p) = who {
            req.extensions_mut().insert(p);
        }
        let limit = Duration::from_secs(st.settings.http.request_timeout_secs);
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => error(
                StatusCode::REQUEST_TIMEOUT,
                "the request took longer than http.request_timeout_secs",
            ),
        }
    };
    let status = response.status().as_u16();
    let duration_ms = started.elapsed().as_millis() as u64;
    if path.starts_with("/v1/") {
        info!(identity = %name, role, %method, %path, status, duration_ms, "http request");
    } else {
        tracing::debug!(identity = %name, role, %method, %path, status, duration_ms, "http request");
    }
    response
}

/// The principal if its role is one of `roles`: 401 without a valid token, 403 for another
/// role.
#[allow(clippy::result_large_err)]
fn require(who: Option<Extension<Principal>>, roles: &[Role]) -> Result<Principal, Response> {
    let Some(Extension(who)) = who else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Err(r);
    };
    if !roles.contains(&who.role) {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        return Err(error(
            StatusCode::FORBIDDEN,
            &format!(
                "role {} required, token has {}",
                names.join(" or "),
                who.role
            ),
        ));
    }
    Ok(who)
}

async fn upload(
    State(st): State<Arc<AppState>>,
    who: Option<Extension<Principal>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = match require(who, &[Role::Lab]) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let started = Instant::now();
    let received_at = Utc::now();
    let limit = st.settings.http.body_limit_bytes;
    let too_large = || {
        ::metrics::counter!(metrics::LAB_BATCHES, "outcome" => "too_large").increment(1);
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body exceeds the limit of {limit} bytes (http.body_limit_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/csv")
        .to_ascii_lowercase();
    let json_body = content_type.starts_with("application/json");
    let csv_body = content_type.starts_with("text/csv")
        || content_type.starts_with("text/plain")
        || content_type.starts_with("text/tab-separated-values");
    if !(json_body || csv_body) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send text/csv (comma or tab) or application/json",
        );
    }
    let mut buf: Vec<u8> = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return error(StatusCode::BAD_REQUEST, "the body could not be read");
        };
        if buf.len() + chunk.len() > limit {
            return too_large();
        }
        buf.extend_from_slice(&chunk);
    }

    let registry = st.registry.snapshot();
    let settings = st.settings.clone();
    let reg = registry.clone();
    // The file is archived verbatim (tamper evidence) once the batch is accepted.
    let buf = std::sync::Arc::new(buf);
    let raw = buf.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let ctx = CheckContext {
            registry: &reg,
            ingest: &settings.ingest,
            lab: &settings.lab,
            now: Utc::now(),
        };
        // Rows are checked as they are read: the body is the only copy of the batch's text.
        if json_body {
            lab::check_json(&buf, &ctx)
        } else {
            lab::check_csv(&buf, &ctx)
        }
    })
    .await;
    let checked = match checked {
        Ok(Ok(c)) => c,
        Ok(Err(issues)) => {
            ::metrics::counter!(metrics::LAB_BATCHES, "outcome" => "rejected").increment(1);
            let report = Report::unreadable(issues, received_at);
            info!(uploaded_by = %who.name, errors = report.error_count, "lab batch unreadable");
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response();
        }
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "checking the batch failed",
            )
        }
    };
    let batch_id = checked.batch_id.clone().unwrap_or_default();
    let lab_id = checked.lab_id.clone().unwrap_or_default();
    let rows = checked.row_count;
    let mut client = match st.pool.get().await {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, batch_id, "lab upload: database unavailable");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry later",
            );
        }
    };
    let ctx = LabContext {
        registry: &registry,
        standards: &st.standards,
        mqtt: &st.settings.mqtt,
        clear_after: st.settings.judge.clear_after,
    };
    let commit_started = Instant::now();
    let read_check_ms = (commit_started - started).as_millis() as u64;
    let outcome =
        store::lab::submit(&mut client, &ctx, checked, &raw, received_at, &who.name).await;
    let store_ms = commit_started.elapsed().as_millis() as u64;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let (status, outcome_name, body) = match outcome {
        Ok(Outcome::Accepted(report)) => {
            ::metrics::histogram!(metrics::COMMIT_SECONDS, "source" => "lab")
                .record(commit_started.elapsed().as_secs_f64());
            count_levels(&report);
            st.outbox.notify_one();
            (StatusCode::CREATED, "accepted", report)
        }
        Ok(Outcome::Replayed(report)) => (StatusCode::OK, "replayed", report),
        Ok(Outcome::Rejected(report)) => (StatusCode::UNPROCESSABLE_ENTITY, "rejected", report),
        Ok(Outcome::Conflict(sha)) => (
            StatusCode::CONFLICT,
            "conflict",
            json!({
                "error": "this batch_id was accepted with different content; use a new batch_id",
                "batch_id": batch_id,
                "stored_content_sha256": sha,
            }),
        ),
        Err(e) => {
            warn!(error = %e, batch_id, lab_id, rows, "lab upload: database error");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database error; retry later",
            );
        }
    };
    ::metrics::counter!(metrics::LAB_BATCHES, "outcome" => outcome_name).increment(1);
    info!(
        batch_id,
        lab_id,
        rows,
        uploaded_by = %who.name,
        outcome = outcome_name,
        errors = body["error_count"].as_u64().unwrap_or(0),
        read_check_ms,
        store_ms,
        elapsed_ms,
        "lab batch"
    );
    (status, Json(body)).into_response()
}

fn count_levels(report: &Value) {
    if let Some(map) = report["by_judgement"].as_object() {
        for (level, n) in map {
            ::metrics::counter!(metrics::READINGS, "source" => "lab", "level" => level.clone())
                .increment(n.as_u64().unwrap_or(0));
        }
    }
}

async fn batch(
    State(st): State<Arc<AppState>>,
    who: Option<Extension<Principal>>,
    Path(batch_id): Path<String>,
) -> Response {
    if let Err(r) = require(who, &[Role::Lab, Role::Admin]) {
        return r;
    }
    let client = match st.pool.get().await {
        Ok(c) => c,
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable"),
    };
    match store::lab::get(&client, &batch_id).await {
        Ok(Some((status, report))) => Json(json!({
            "batch_id": batch_id, "status": status, "report": report,
        }))
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such batch"),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "database error"),
    }
}

/// Query parameters of the read endpoints.
type Params = Query<HashMap<String, String>>;

/// Largest `limit` of the read endpoints (default 100).
const MAX_LIMIT: i64 = 1000;

#[allow(clippy::result_large_err)]
fn limit_of(q: &HashMap<String, String>) -> Result<i64, Response> {
    match q.get("limit") {
        None => Ok(100),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                &format!("limit must be an integer within 1-{MAX_LIMIT}"),
            )),
        },
    }
}

/// A store result as a JSON list, or 503.
fn listed(r: Result<Vec<Value>, store::StoreError>, what: &str) -> Response {
    match r {
        Ok(items) => Json(json!({ "count": items.len(), what: items })).into_response(),
        Err(e) => {
            warn!(error = %e, "http: {what} query failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database error; retry later",
            )
        }
    }
}

async fn alerts(
    State(st): State<Arc<AppState>>,
    who: Option<Extension<Principal>>,
    Query(q): Params,
) -> Response {
    let who = match require(who, &[Role::Bureau, Role::Admin]) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let limit = match limit_of(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let since = match q
        .get("since")
        .map(|s| chrono::DateTime::parse_from_rfc3339(s))
    {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "since must be RFC 3339"),
    };
    let Ok(client) = st.pool.get().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    };
    listed(
        store::queries::alerts(&client, &who.scope, since, limit).await,
        "alerts",
    )
}

async fn incidents(
    State(st): State<Arc<AppState>>,
    who: Option<Extension<Principal>>,
    Query(q): Params,
) -> Response {
    let who = match require(who, &[Role::Bureau, Role::Admin]) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let limit = match limit_of(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let open_only = match q.get("open").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "open must be true or false"),
    };
    let Ok(client) = st.pool.get().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    };
    listed(
        store::queries::incidents(&client, &who.scope, open_only, limit).await,
        "incidents",
    )
}

async fn point_readings(
    State(st): State<Arc<AppState>>,
    who: Option<Extension<Principal>>,
    Path(point_id): Path<String>,
    Query(q): Params,
) -> Response {
    let who = match require(who, &[Role::Bureau, Role::Admin]) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let limit = match limit_of(&q) {
        Ok(n) => n,
        Err(r) => return r,
    };
    let Ok(client) = st.pool.get().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    };
    match store::queries::point_readings(&client, &who.scope, &point_id, limit).await {
        Ok(Some(readings)) => Json(json!({
            "point_id": point_id, "count": readings.len(), "readings": readings,
        }))
        .into_response(),
        // The same answer for a point that does not exist and one outside the scope.
        Ok(None) => error(StatusCode::NOT_FOUND, "no such point"),
        Err(e) => {
            warn!(error = %e, "http: readings query failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database error; retry later",
            )
        }
    }
}

async fn points(State(st): State<Arc<AppState>>, who: Option<Extension<Principal>>) -> Response {
    if let Err(r) = require(who, &[Role::Admin]) {
        return r;
    }
    let Ok(client) = st.pool.get().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    };
    let loaded = store::points::load(&client).await.map(|(mut points, _)| {
        points.sort_by(|a, b| a.id.cmp(&b.id));
        points
            .iter()
            .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
            .collect()
    });
    listed(loaded, "points")
}

async fn identities_of(st: &AppState, kind: IdentityKind, what: &str) -> Response {
    let Ok(client) = st.pool.get().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable");
    };
    let loaded = store::identities::list(&client, Some(kind))
        .await
        .map(|ids| {
            ids.iter()
                .map(|i| {
                    let mut v = json!({
                        "name": i.username,
                        "created_at": i.created_at,
                        "revoked_at": i.revoked_at,
                    });
                    if kind == IdentityKind::Bureau {
                        v["all_counties"] = json!(i.all_counties);
                        v["counties"] = json!(i.counties);
                    }
                    v
                })
                .collect()
        });
    listed(loaded, what)
}

async fn stations(State(st): State<Arc<AppState>>, who: Option<Extension<Principal>>) -> Response {
    if let Err(r) = require(who, &[Role::Admin]) {
        return r;
    }
    identities_of(&st, IdentityKind::Station, "stations").await
}

async fn bureaus(State(st): State<Arc<AppState>>, who: Option<Extension<Principal>>) -> Response {
    if let Err(r) = require(who, &[Role::Admin]) {
        return r;
    }
    identities_of(&st, IdentityKind::Bureau, "bureaus").await
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let limit = Duration::from_secs(2);
    let db = tokio::time::timeout(limit, async {
        let client = st.pool.get().await.ok()?;
        client.query_one("SELECT 1", &[]).await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let broker_addr = format!("{}:{}", st.settings.mqtt.host, st.settings.mqtt.port);
    let broker = matches!(
        tokio::time::timeout(limit, tokio::net::TcpStream::connect(&broker_addr)).await,
        Ok(Ok(_))
    );
    let status = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "database": db, "broker": broker }))).into_response()
}

async fn render_metrics(State(st): State<Arc<AppState>>) -> Response {
    let Some(handle) = &st.metrics else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        );
    };
    if let Ok(client) = st.pool.get().await {
        if let Ok(n) = store::outbox::pending_count(&client).await {
            crate::telemetry::outbox_pending(n);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_is_per_identity_and_refills() {
        let l = RateLimiter::new(3);
        for _ in 0..3 {
            assert_eq!(l.take("a"), Ok(()));
        }
        let wait = l.take("a").expect_err("bucket empty");
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(l.take("b"), Ok(()), "another identity has its own bucket");
        let off = RateLimiter::new(0);
        assert!((0..1000).all(|_| off.take("a").is_ok()));
    }
}
