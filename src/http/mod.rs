//! The HTTP adapter (axum): lab batch uploads, batch reports, health, readiness and metrics.
//!
//! | route | auth | |
//! |---|---|---|
//! | `POST /v1/lab/batches` | role `lab` | CSV or JSON batch → 201 / 200 (replay) / 409 / 413 / 422 |
//! | `GET /v1/lab/batches/{batch_id}` | any token | status and stored report |
//! | `GET /healthz` | none | process up |
//! | `GET /readyz` | none | database and broker reachable |
//! | `GET /metrics` | none | Prometheus text format |

pub mod auth;
pub mod client;
pub mod metrics;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
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
use crate::registry::Registry;
use crate::store;
use crate::store::lab::{LabContext, Outcome};
use auth::{Principal, Tokens};

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
    pub registry: Arc<RwLock<Arc<Registry>>>,
    /// Standards in force.
    pub standards: Arc<Standards>,
    /// Wakes the alert publisher after a batch queued alerts.
    pub outbox: Arc<Notify>,
    /// API tokens.
    pub tokens: Tokens,
    /// Prometheus renderer (absent when no recorder could be installed).
    pub metrics: Option<PrometheusHandle>,
}

/// The router with every route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/lab/batches", post(upload))
        .route("/v1/lab/batches/{batch_id}", get(batch))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
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

/// Checks the bearer token; `role` is the role required, if any.
#[allow(clippy::result_large_err)]
fn authorize(
    st: &AppState,
    headers: &HeaderMap,
    role: Option<&str>,
) -> Result<Principal, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(who) = token.and_then(|t| st.tokens.check(t)) else {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return Err(r);
    };
    if let Some(role) = role {
        if who.role != role {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!("role {role:?} required, token has {:?}", who.role),
            ));
        }
    }
    Ok(who)
}

async fn upload(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let who = match authorize(&st, &headers, Some("lab")) {
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

    let registry = match st.registry.read() {
        Ok(r) => r.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let settings = st.settings.clone();
    let reg = registry.clone();
    // The file is archived verbatim (tamper evidence) once the batch is accepted.
    let buf = std::sync::Arc::new(buf);
    let raw = buf.clone();
    let checked = tokio::task::spawn_blocking(move || {
        let parsed = if json_body {
            lab::csv::parse_json(&buf)
        } else {
            lab::csv::parse_csv(&buf)
        };
        parsed.map(|p| {
            let ctx = CheckContext {
                registry: &reg,
                ingest: &settings.ingest,
                lab: &settings.lab,
                now: Utc::now(),
            };
            lab::check_batch(&p, &ctx)
        })
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
    headers: HeaderMap,
    Path(batch_id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&st, &headers, None) {
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
        if let Ok(row) = client
            .query_one(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL",
                &[],
            )
            .await
        {
            let n: i64 = row.get(0);
            ::metrics::gauge!(metrics::OUTBOX_PENDING).set(n as f64);
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
        .into_response()
}
