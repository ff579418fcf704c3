//! The HTTP adapter (axum): lab batch uploads and reports, bureau and admin reads, health,
//! readiness and metrics.
//!
//! | route | roles | |
//! |---|---|---|
//! | `POST /v1/lab/batches` | `lab`, `enterprise` | CSV, JSON or xlsx batch → 201 / 200 (replay) / 409 / 413 / 422; an enterprise's batch naming a point not its own: 403, nothing stored |
//! | `GET /v1/lab/batches/{batch_id}` | `lab`, `admin` | status and stored report |
//! | `GET /v1/alerts?since=RFC3339&limit=N` | `bureau`, `admin` | alert events of the caller's counties |
//! | `GET /v1/incidents?open=true&limit=N` | `bureau`, `admin` | incidents of the caller's counties |
//! | `GET /v1/points/{id}/readings?limit=N` | `bureau`, `admin` | 404 for a point outside the caller's counties |
//! | `GET /v1/points?q=` | `admin` | the point registry, or a search in it |
//! | `GET /v1/stations`, `GET /v1/bureaus` | `admin` | broker identities (no secrets) |
//! | `/v1/quarantine…` | `admin` | quarantine browser and replay ([`admin`]) |
//! | `POST /v1/points/import`, `POST`/`DELETE /v1/stations`, `/v1/bureaus`, `GET`/`POST`/`DELETE /v1/tokens` | `admin` | registry import, broker identities, API tokens ([`manage`]) |
//! | `/v1/subscriptions…`, `/v1/deliveries…` | `bureau` (its own bureau's), `admin` | alert subscriptions, test, pause, resume, remove, dead letters and retry ([`subscriptions`]) |
//! | `GET /v1/coverage`, `GET /v1/overdue` | `bureau`, `admin` | network management, see [`network`] |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /v1/openapi.json` | none | the OpenAPI document of every route here ([`openapi`]) |
//!
//! Every request passes [`gate`]: the bearer token is checked (the principal is handed to the
//! handler), the per-identity rate limit and the request timeout are applied, and one log
//! line records identity, role, method, path, status and duration. Each handler names the
//! roles it allows by its [`caller::Caller`] argument: a missing or invalid token gets 401, a
//! valid token of the wrong role 403. Handlers return `Result<Response, ApiError>`; every
//! refusal and failure is an [`error::ApiError`] with its status and `{"error": …}` body.

pub mod admin;
pub mod auth;
pub mod caller;
pub mod client;
pub mod console;
pub mod error;
pub mod manage;
pub mod metrics;
pub mod network;
pub mod openapi;
pub mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use deadpool_postgres::Pool;
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn, Instrument};

use crate::config::{CropRules, Settings};
use crate::domain::obligation::Obligations;
use crate::domain::standard::Standards;
use crate::lab::checks::CheckContext;
use crate::lab::{self, Checked, Issue, Report};
use crate::registry::{Registry, SharedRegistry};
use crate::store;
use crate::store::identities::IdentityKind;
use crate::store::lab::{LabContext, Outcome};
use crate::telemetry;
use auth::TokenStore;
use caller::{AdminOnly, BureauOrAdmin, Caller, LabOrAdmin, LabOrEnterprise};
pub use error::ApiError;
use openapi::{ApiRoutes, Method::*};

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
    /// Monitoring obligations in force (coverage, overdue).
    pub obligations: Arc<Obligations>,
    /// Food limits and farmland category rules (crop samples, categories).
    pub crops: Arc<CropRules>,
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

/// Every API route, each with its roles and summary (see [`openapi`]: the router and
/// `GET /v1/openapi.json` are built from this one table; adding a route is one `.add` line).
pub fn api_routes() -> ApiRoutes {
    ApiRoutes::new()
        .add(Post, "/v1/lab/batches", "lab, enterprise", "upload a batch (CSV, JSON or xlsx): 201 accepted, 200 replay, 409, 413, 415, 422 with every error", upload)
        .add(Get, "/v1/lab/batches/{batch_id}", "lab, admin", "a batch's status and stored report", batch)
        .add(Get, "/v1/alerts", "bureau, admin", "alert events of the caller's counties (since, limit)", alerts)
        .add(Get, "/v1/incidents", "bureau, admin", "incidents of the caller's counties (open, limit)", incidents)
        .add(Get, "/v1/points", "admin", "the point registry, or a search in it (q)", points)
        .add(Get, "/v1/points/{point_id}/readings", "bureau, admin", "a point's readings; 404 outside the caller's counties", point_readings)
        .add(Get, "/v1/stations", "admin", "station broker identities (no secrets)", stations)
        .add(Get, "/v1/bureaus", "admin", "bureau broker identities and their counties", bureaus)
        .add(Get, "/healthz", "none", "200 while the process is up", || async { "ok\n" })
        .add(Get, "/readyz", "none", "200 when the database and the broker are reachable, else 503", readyz)
        .add(Get, "/metrics", "none", "Prometheus metrics", render_metrics)
        .merge(admin::routes())
        .merge(manage::routes())
        .merge(network::routes())
        .merge(subscriptions::routes())
}

/// The router with every route: the API (and its document), the console and public page.
pub fn router(state: Arc<AppState>) -> Router {
    api_routes()
        .into_router()
        .merge(console::router(state.clone()))
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
    console::i18n::set_default(&state.settings.console.default_lang);
    info!(%addr, tokens = state.tokens.len(), "http: listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
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
    // Without a bearer token, a console session cookie may name the principal.
    let (who, session) = match who {
        Some(p) => (Some(p), None),
        None => match console::session::resolve(&st, req.headers()).await {
            Some((p, csrf)) => (Some(p), Some(csrf)),
            None => (None, None),
        },
    };
    let (name, role) = who.as_ref().map_or(("-".to_string(), "-"), |p| {
        (p.name.clone(), p.role.as_str())
    });
    let limited = who.as_ref().and_then(|p| st.limiter.take(&p.name).err());
    let response = if let Some(retry_after) = limited {
        ApiError::RateLimited { retry_after }.into_response()
    } else if !api_csrf_ok(&req, session.as_ref()) {
        ApiError::CsrfMissing.into_response()
    } else {
        if let Some(p) = who {
            req.extensions_mut().insert(p);
        }
        if let Some(csrf) = session {
            req.extensions_mut().insert(csrf);
        }
        let limit = Duration::from_secs(st.settings.http.request_timeout_secs);
        match tokio::time::timeout(limit, next.run(req)).await {
            Ok(r) => r,
            Err(_) => ApiError::Timeout.into_response(),
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

/// Whether an API request authenticated by a console session may proceed: a
/// state-changing one must carry the session's CSRF token in `X-CSRF-Token`. Bearer
/// requests, reads and console routes (whose handlers check their forms) pass.
fn api_csrf_ok(req: &Request, session: Option<&console::SessionCsrf>) -> bool {
    let Some(csrf) = session else {
        return true;
    };
    if req.method().is_safe() || !req.uri().path().starts_with("/v1/") {
        return true;
    }
    req.headers()
        .get(console::session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|sent| console::session::same_secret(&csrf.0, sent))
}

/// `POST /v1/lab/batches`: read the body, check it, store it, answer with its report.
async fn upload(
    State(st): State<Arc<AppState>>,
    who: Caller<LabOrEnterprise>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let received_at = Utc::now();
    let (buf, format) = read_body(&st, &headers, body).await?;
    let registry = st.registry.snapshot();
    // The file is archived verbatim (tamper evidence) once the batch is accepted.
    let buf = Arc::new(buf);
    let checked = match check_body(&st, &registry, buf.clone(), format).await? {
        Ok(c) => c,
        Err(issues) => {
            let report = Report::unreadable(issues, received_at);
            telemetry::lab_batch_unreadable(&who.name, report.error_count);
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response());
        }
    };
    // An enterprise uploads its own points' results only: anything else is refused whole
    // (403) before anything is stored.
    if who.role == auth::Role::Enterprise {
        network::check_own_points(&st, &who.name, &checked.point_ids).await?;
    }
    // From here on, every log line of the upload carries its batch id (the span's field).
    let batch_id = checked.batch_id.clone().unwrap_or_default();
    let span = tracing::info_span!("lab_upload", batch_id = batch_id.as_str());
    let lab_id = checked.lab_id.clone().unwrap_or_default();
    let sent = Sent {
        upload: telemetry::LabUpload {
            batch_id: &batch_id,
            lab_id: &lab_id,
            rows: checked.row_count,
            uploaded_by: &who.name,
        },
        started,
        received_at,
    };
    store_checked(&st, &registry, checked, &buf, &sent)
        .instrument(span)
        .await
}

/// A checked upload on its way to the store: who sent what, and when it came in.
struct Sent<'a> {
    upload: telemetry::LabUpload<'a>,
    started: Instant,
    received_at: chrono::DateTime<Utc>,
}

/// Stores a checked batch (or finds it stored) and answers with its report.
async fn store_checked(
    st: &AppState,
    registry: &Registry,
    checked: Checked,
    buf: &[u8],
    sent: &Sent<'_>,
) -> Result<Response, ApiError> {
    let mut client = st.pool.get().await.map_err(|e| {
        telemetry::lab_upload_failed(&sent.upload, "database unavailable", &e);
        ApiError::Unavailable("database unavailable; retry later")
    })?;
    let ctx = LabContext {
        registry,
        standards: &st.standards,
        mqtt: &st.settings.mqtt,
        clear_after: st.settings.judge.clear_after,
        crops: Some(&st.crops),
        tracks: None,
        key_cache: None,
        archive_head: None,
    };
    let commit_started = Instant::now();
    let read_check = commit_started - sent.started;
    let uploaded_by = sent.upload.uploaded_by;
    let outcome = store::lab::submit(
        &mut client,
        &ctx,
        checked,
        buf,
        sent.received_at,
        uploaded_by,
    )
    .await
    .map_err(|e| {
        telemetry::lab_upload_failed(&sent.upload, "database error", &e);
        ApiError::DATABASE_RETRY
    })?;
    let store = commit_started.elapsed();
    if let Outcome::Accepted(report) = &outcome {
        let levels = report
            .by_judgement
            .iter()
            .map(|(level, n)| (level.as_ref(), *n as u64));
        telemetry::lab_batch_accepted(store, levels);
        st.outbox.notify_one();
    }
    let answer = Answered::of(outcome, sent.upload.batch_id);
    telemetry::lab_batch_answered(&telemetry::LabBatchAnswered {
        upload: sent.upload,
        outcome: answer.outcome,
        errors: answer.body["error_count"].as_u64().unwrap_or(0),
        read_check,
        store,
        elapsed: sent.started.elapsed(),
    });
    Ok((answer.status, Json(answer.body)).into_response())
}

/// The format of an upload, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchFormat {
    Csv,
    Json,
    Xlsx,
}

impl BatchFormat {
    /// CSV (also plain text, TSV), JSON or xlsx; `None` for anything else. No content type
    /// is read as CSV.
    fn of(headers: &HeaderMap) -> Option<BatchFormat> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/csv")
            .to_ascii_lowercase();
        let is = |t: &str| content_type.starts_with(t);
        if is("application/json") {
            Some(BatchFormat::Json)
        } else if is(lab::xlsx::CONTENT_TYPE) {
            Some(BatchFormat::Xlsx)
        } else if is("text/csv") || is("text/plain") || is("text/tab-separated-values") {
            Some(BatchFormat::Csv)
        } else {
            None
        }
    }
}

/// Reads an upload's body within `http.body_limit_bytes`, with its format.
async fn read_body(
    st: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, BatchFormat), ApiError> {
    let limit = st.settings.http.body_limit_bytes;
    let too_large = || {
        telemetry::lab_batch_too_large(limit);
        ApiError::TooLarge { limit }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let format = BatchFormat::of(headers).ok_or(ApiError::UnsupportedMediaType)?;
    let mut buf: Vec<u8> = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::BadRequest("the body could not be read".into()))?;
        if buf.len() + chunk.len() > limit {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, format))
}

/// Runs the pure row, batch and QC checks off the async threads. The inner `Err` holds the
/// issues of a body that is no batch at all.
async fn check_body(
    st: &AppState,
    registry: &Arc<Registry>,
    buf: Arc<Vec<u8>>,
    format: BatchFormat,
) -> Result<Result<Checked, Vec<Issue>>, ApiError> {
    let settings = st.settings.clone();
    let crops = st.crops.clone();
    let reg = registry.clone();
    tokio::task::spawn_blocking(move || {
        let ctx = CheckContext {
            registry: &reg,
            ingest: &settings.ingest,
            lab: &settings.lab,
            now: Utc::now(),
        };
        // Rows are checked as they are read: the body is the only copy of the batch's text.
        let checked = match format {
            BatchFormat::Json => lab::check_json(&buf, &ctx),
            BatchFormat::Xlsx => lab::check_xlsx(&buf, &ctx),
            BatchFormat::Csv => lab::check_csv(&buf, &ctx),
        };
        checked.map(|mut c| {
            let crop_issues = lab::crop::check(&c.rows, &crops.food, &reg);
            c.issues.extend(crop_issues);
            c
        })
    })
    .await
    .map_err(|_| ApiError::Internal("checking the batch failed"))
}

/// The answer to a stored (or refused) upload: status, outcome name for metrics and logs,
/// and body.
struct Answered {
    status: StatusCode,
    outcome: &'static str,
    body: Value,
}

impl Answered {
    fn of(outcome: Outcome, batch_id: &str) -> Answered {
        let (status, outcome, body) = match outcome {
            Outcome::Accepted(report) => (StatusCode::CREATED, "accepted", sorted(&report)),
            Outcome::Replayed(stored) => (StatusCode::OK, "replayed", stored),
            Outcome::Rejected(report) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "rejected",
                sorted(&report),
            ),
            Outcome::Conflict(sha) => (
                StatusCode::CONFLICT,
                "conflict",
                json!({
                    "error": "this batch_id was accepted with different content; use a new batch_id",
                    "batch_id": batch_id,
                    "stored_content_sha256": sha,
                }),
            ),
        };
        Answered {
            status,
            outcome,
            body,
        }
    }
}

/// A checked batch's report as the API answers it (sorted keys, see [`Report::to_json`]).
fn sorted(report: &Report) -> Value {
    // A report is plain data (strings, numbers, maps): serialising it cannot fail.
    report.to_json().unwrap_or(Value::Null)
}

async fn batch(
    State(st): State<Arc<AppState>>,
    _who: Caller<LabOrAdmin>,
    Path(batch_id): Path<String>,
) -> Result<Response, ApiError> {
    let client = st.pool.get().await?;
    match store::lab::get(&client, &batch_id).await {
        Ok(Some((status, report))) => Ok(Json(json!({
            "batch_id": batch_id, "status": status, "report": report,
        }))
        .into_response()),
        Ok(None) => Err(ApiError::NotFound("no such batch")),
        Err(_) => Err(ApiError::Unavailable("database error")),
    }
}

/// Query parameters of the read endpoints.
pub(crate) type Params = Query<HashMap<String, String>>;

/// Largest `limit` of the read endpoints (default 100).
const MAX_LIMIT: i64 = 1000;

pub(crate) fn limit_of(q: &HashMap<String, String>) -> Result<i64, ApiError> {
    match q.get("limit") {
        None => Ok(100),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest(
                format!("limit must be an integer within 1-{MAX_LIMIT}").into(),
            )),
        },
    }
}

/// A failed read query: logged, then 503.
pub(crate) fn query_failed(what: &str) -> impl FnOnce(store::StoreError) -> ApiError + '_ {
    move |e| {
        warn!(error = %e, "http: {what} query failed");
        ApiError::DATABASE_RETRY
    }
}

/// A list as `{"count": n, what: [...]}`.
pub(crate) fn listed<T: serde::Serialize>(items: Vec<T>, what: &str) -> Response {
    Json(json!({ "count": items.len(), what: items })).into_response()
}

async fn alerts(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let limit = limit_of(&q)?;
    let since = match q
        .get("since")
        .map(|s| chrono::DateTime::parse_from_rfc3339(s))
    {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => return Err(ApiError::BadRequest("since must be RFC 3339".into())),
    };
    let client = st.pool.get().await?;
    let items = store::queries::alerts(&client, who.scope(), since, limit)
        .await
        .map_err(query_failed("alerts"))?;
    Ok(listed(items, "alerts"))
}

async fn incidents(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let limit = limit_of(&q)?;
    let open_only = match q.get("open").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("open must be true or false".into())),
    };
    let client = st.pool.get().await?;
    let items = store::queries::incidents(&client, who.scope(), open_only, limit)
        .await
        .map_err(query_failed("incidents"))?;
    Ok(listed(items, "incidents"))
}

async fn point_readings(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Path(point_id): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let limit = limit_of(&q)?;
    let client = st.pool.get().await?;
    let found = store::queries::point_readings(&client, who.scope(), &point_id, limit)
        .await
        .map_err(query_failed("readings"))?;
    // The same answer for a point that does not exist and one outside the scope.
    let readings = found.ok_or(ApiError::NotFound("no such point"))?;
    Ok(Json(json!({
        "point_id": point_id, "count": readings.len(), "readings": readings,
    }))
    .into_response())
}

/// `GET /v1/points[?q=TEXT]`: the registry, or the points whose id, name or county code
/// contains `TEXT` (case-insensitive).
async fn points(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let client = st.pool.get().await?;
    let (mut points, _) = store::points::load(&client)
        .await
        .map_err(query_failed("points"))?;
    if let Some(text) = q.get("q").map(|t| t.to_lowercase()) {
        points.retain(|p| {
            [&p.id, &p.name, &p.county_code]
                .iter()
                .any(|f| f.to_lowercase().contains(&text))
        });
    }
    points.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(listed(points, "points"))
}

/// A broker identity as the admin endpoints list it (no secrets); bureaus add their
/// counties.
#[derive(serde::Serialize)]
struct IdentityItem<'a> {
    name: &'a str,
    created_at: chrono::DateTime<Utc>,
    revoked_at: Option<chrono::DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all_counties: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counties: Option<&'a [String]>,
}

async fn identities_of(
    st: &AppState,
    kind: IdentityKind,
    what: &str,
) -> Result<Response, ApiError> {
    let client = st.pool.get().await?;
    let ids = store::identities::list(&client, Some(kind))
        .await
        .map_err(query_failed(what))?;
    let bureau = kind == IdentityKind::Bureau;
    let items: Vec<IdentityItem<'_>> = ids
        .iter()
        .map(|i| IdentityItem {
            name: &i.username,
            created_at: i.created_at,
            revoked_at: i.revoked_at,
            all_counties: bureau.then_some(i.all_counties),
            counties: bureau.then_some(i.counties.as_slice()),
        })
        .collect();
    Ok(listed(items, what))
}

async fn stations(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
) -> Result<Response, ApiError> {
    identities_of(&st, IdentityKind::Station, "stations").await
}

async fn bureaus(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
) -> Result<Response, ApiError> {
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
    // Cluster mode: ready while any RabbitMQ node of amqp.urls accepts a connection.
    let addrs = match st.settings.ingest.source {
        crate::config::IngestSource::Mqtt => {
            vec![format!(
                "{}:{}",
                st.settings.mqtt.host, st.settings.mqtt.port
            )]
        }
        crate::config::IngestSource::Amqp => crate::amqp::node_addrs(&st.settings.amqp),
    };
    let mut broker = false;
    for addr in &addrs {
        broker |= matches!(
            tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        );
        if broker {
            break;
        }
    }
    let status = if db && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "database": db, "broker": broker }))).into_response()
}

async fn render_metrics(State(st): State<Arc<AppState>>) -> Response {
    let Some(handle) = &st.metrics else {
        return ApiError::Unavailable("metrics recorder not installed").into_response();
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
