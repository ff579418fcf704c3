//! The admin JSON API for what `soilmon points|stations|bureaus|tokens` manage, with the same
//! rules as those commands (the library calls are shared). Every route is role `admin` only.
//!
//! | route | answers |
//! |---|---|
//! | `POST /v1/points/import` (CSV body, the `soilmon points import` format) | `200 {"imported"}`; `422 {"error_count", "errors": [{"line", "column", "detail"}]}`, every bad row (nothing imported) |
//! | `POST /v1/stations` `{"id"}` | `201 {"id", "password", "broker"}` (the password once) |
//! | `DELETE /v1/stations/{id}` | `200 {"revoked", "broker"}` |
//! | `POST /v1/bureaus` `{"name", "counties": [..]}` or `{"name", "all": true}` | `201 {"name", "password", "broker"}` |
//! | `DELETE /v1/bureaus/{name}` | `200 {"revoked", "broker"}` |
//! | `GET /v1/tokens` | `{"count", "tokens": [{"name", "role", "counties"}]}` (no hashes) |
//! | `POST /v1/tokens` `{"name", "role", "counties"?, "all"?}` | `201 {"name", "role", "token"}` (the token once) |
//! | `DELETE /v1/tokens/{name}` | `200 {"revoked"}` |
//!
//! `broker` tells whether the broker files were regenerated and the broker reloaded; when
//! they could not be (say `broker.password_file` is not set), the identity is stored all the
//! same and `soilmon broker sync` applies it later.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::auth::{self, AuthError, Role};
use super::caller::{AdminOnly, Caller};
use super::openapi::{ApiRoutes, Method::*};
use super::{listed, query_failed, ApiError, AppState};
use crate::broker;
use crate::registry::{check_points_csv, RegistryError};
use crate::store::identities::{self, IdentityKind};
use crate::store::queries::Scope;
use crate::store::{self, StoreError};

/// The management routes, merged into [`super::api_routes`].
pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .add(
            Post,
            "/v1/points/import",
            "admin",
            "import a points CSV (200 imported; 422 every bad row by line, nothing imported)",
            import_points,
        )
        .add(
            Post,
            "/v1/stations",
            "admin",
            "add a station broker identity {\"id\"} (its password once)",
            add_station,
        )
        .add(
            Delete,
            "/v1/stations/{id}",
            "admin",
            "revoke a station",
            revoke_station,
        )
        .add(
            Post,
            "/v1/bureaus",
            "admin",
            "add a bureau broker identity {\"name\", \"counties\"|\"all\"}",
            add_bureau,
        )
        .add(
            Delete,
            "/v1/bureaus/{name}",
            "admin",
            "revoke a bureau",
            revoke_bureau,
        )
        .add(
            Get,
            "/v1/tokens",
            "admin",
            "API tokens (no hashes)",
            list_tokens,
        )
        .add(
            Post,
            "/v1/tokens",
            "admin",
            "add an API token {\"name\", \"role\"} (the token once)",
            add_token,
        )
        .add(
            Delete,
            "/v1/tokens/{name}",
            "admin",
            "revoke an API token",
            revoke_token,
        )
}

/// A JSON body, or 400 naming what to send.
fn body_of<T: DeserializeOwned>(body: &Bytes, expected: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("send {expected}: {e}").into()))
}

/// A refusal of the store (a name in use…) as 400, anything else 503.
fn store_refusal(what: &'static str) -> impl FnOnce(StoreError) -> ApiError {
    move |e| match e {
        StoreError::Refused(m) => ApiError::BadRequest(m.into()),
        other => query_failed(what)(other),
    }
}

/// A bad row of a points file as the API reports it.
fn error_json(e: &RegistryError) -> Value {
    match e {
        RegistryError::Csv { line, source } => {
            json!({"line": line, "column": null, "detail": source.to_string()})
        }
        RegistryError::Field {
            line,
            column,
            detail,
        } => json!({"line": line, "column": column, "detail": detail}),
    }
}

async fn import_points(
    State(st): State<Arc<AppState>>,
    who: Caller<AdminOnly>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let points = match check_points_csv(&body[..], &st.settings.registry.counties) {
        Ok(p) => p,
        Err(errors) => {
            let errors: Vec<Value> = errors.iter().map(error_json).collect();
            let body = json!({"imported": 0, "error_count": errors.len(), "errors": errors});
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response());
        }
    };
    let mut client = st.pool.get().await?;
    let n = store::points::upsert(&mut client, &points)
        .await
        .map_err(query_failed("points import"))?;
    info!(by = %who.name, points = n, "points imported over the API");
    Ok(Json(json!({ "imported": n })).into_response())
}

/// Regenerates the broker files and reloads the broker; the outcome as the answers show it.
async fn broker_sync(st: &AppState, client: &tokio_postgres::Client) -> Value {
    let ids = match identities::active(client).await {
        Ok(ids) => ids,
        Err(e) => return json!({"synced": false, "error": e.to_string()}),
    };
    match broker::sync(&st.settings, &ids).await {
        Ok(r) => {
            let mut v = json!({"synced": true, "identities": ids.len()});
            if let Some(f) = r.files {
                v["reloaded"] = json!(f.reloaded);
            }
            if let Some(q) = r.rabbitmq {
                v["rabbitmq"] = json!({
                    "changed": q.changed, "deleted": q.deleted,
                    "need_rotation": q.need_rotation,
                });
            }
            v
        }
        Err(e) => {
            warn!(error = %e, "broker files not regenerated; run soilmon broker sync");
            json!({"synced": false, "error": e.to_string()})
        }
    }
}

/// Creates a broker identity with a fresh secret; answers it once.
async fn add_identity(
    st: &AppState,
    kind: IdentityKind,
    name: &str,
    counties: &[String],
    all: bool,
) -> Result<Response, ApiError> {
    broker::check_name(name, &st.settings)
        .map_err(|e| ApiError::BadRequest(e.to_string().into()))?;
    let secret = broker::new_secret();
    let hashes = broker::hashes(&secret);
    let client = st.pool.get().await?;
    identities::add(&client, name, kind, &hashes, counties, all)
        .await
        .map_err(store_refusal("identity add"))?;
    let key = match kind {
        IdentityKind::Station => "id",
        IdentityKind::Bureau => "name",
    };
    let broker = broker_sync(st, &client).await;
    let body = json!({ key: name, "password": secret, "broker": broker });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_identity(
    st: &AppState,
    kind: IdentityKind,
    name: &str,
) -> Result<Response, ApiError> {
    let client = st.pool.get().await?;
    identities::revoke(&client, kind, name)
        .await
        .map_err(|e| match e {
            StoreError::Refused(_) => ApiError::NotFound("no such active identity"),
            other => query_failed("identity revoke")(other),
        })?;
    let broker = broker_sync(st, &client).await;
    Ok(Json(json!({ "revoked": name, "broker": broker })).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewStation {
    id: String,
}

async fn add_station(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewStation = body_of(&body, r#"{"id": "st07"}"#)?;
    add_identity(&st, IdentityKind::Station, &b.id, &[], false).await
}

async fn revoke_station(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    revoke_identity(&st, IdentityKind::Station, &id).await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBureau {
    name: String,
    #[serde(default)]
    counties: Vec<String>,
    #[serde(default)]
    all: bool,
}

/// The counties of a bureau identity or token: some from `registry.counties`, or all.
fn check_scope(st: &AppState, counties: &[String], all: bool) -> Result<(), ApiError> {
    if all != counties.is_empty() {
        return Err(ApiError::BadRequest(
            "give counties (GB/T 2260 codes) or all: true, not both".into(),
        ));
    }
    let known = &st.settings.registry.counties;
    if let Some(c) = counties.iter().find(|c| !known.contains(c)) {
        return Err(ApiError::BadRequest(
            format!("unknown county {c:?} (registry.counties: {known:?})").into(),
        ));
    }
    Ok(())
}

async fn add_bureau(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewBureau = body_of(&body, r#"{"name": "…", "counties": ["441781"]}"#)?;
    check_scope(&st, &b.counties, b.all)?;
    add_identity(&st, IdentityKind::Bureau, &b.name, &b.counties, b.all).await
}

async fn revoke_bureau(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    revoke_identity(&st, IdentityKind::Bureau, &name).await
}

/// The tokens file, or 503 when the service has none configured.
fn tokens_path(st: &AppState) -> Result<&std::path::Path, ApiError> {
    let path = st.settings.http.tokens_file.as_path();
    if path.as_os_str().is_empty() {
        return Err(ApiError::Unavailable("http.tokens_file is not set"));
    }
    Ok(path)
}

fn auth_failed(e: AuthError) -> ApiError {
    match e {
        AuthError::Refused(m) => ApiError::BadRequest(m.into()),
        other => {
            warn!(error = %other, "http: tokens file");
            ApiError::Internal("the tokens file could not be read or written")
        }
    }
}

async fn list_tokens(
    State(st): State<Arc<AppState>>,
    _who: Caller<AdminOnly>,
) -> Result<Response, ApiError> {
    let entries = auth::entries(tokens_path(&st)?).map_err(auth_failed)?;
    let items: Vec<Value> = entries
        .iter()
        .map(|p| {
            let counties = match (&p.role, &p.scope) {
                (Role::Bureau, Scope::All) => json!("*"),
                (Role::Bureau, Scope::Counties(c)) => json!(c),
                _ => Value::Null,
            };
            json!({"name": p.name, "role": p.role.as_str(), "counties": counties})
        })
        .collect();
    Ok(listed(items, "tokens"))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: String,
    #[serde(default)]
    counties: Vec<String>,
    #[serde(default)]
    all: bool,
}

async fn add_token(
    State(st): State<Arc<AppState>>,
    who: Caller<AdminOnly>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: NewToken = body_of(&body, r#"{"name": "…", "role": "lab|bureau|admin"}"#)?;
    let role = Role::parse(&b.role).ok_or_else(|| {
        ApiError::BadRequest("role must be lab, bureau, admin or enterprise".into())
    })?;
    let scope = match role {
        Role::Bureau => {
            check_scope(&st, &b.counties, b.all)?;
            if b.all {
                Scope::All
            } else {
                Scope::Counties(b.counties)
            }
        }
        _ if b.all || !b.counties.is_empty() => {
            return Err(ApiError::BadRequest(
                "counties and all apply to bureau tokens only".into(),
            ))
        }
        Role::Admin => Scope::All,
        Role::Lab | Role::Enterprise => Scope::Counties(Vec::new()),
    };
    let token = auth::add(tokens_path(&st)?, &b.name, role, scope).map_err(auth_failed)?;
    info!(by = %who.name, name = %b.name, role = role.as_str(), "token added over the API");
    let body = json!({"name": b.name, "role": role.as_str(), "token": token});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn revoke_token(
    State(st): State<Arc<AppState>>,
    who: Caller<AdminOnly>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    auth::revoke(tokens_path(&st)?, &name).map_err(|e| match e {
        AuthError::Refused(_) => ApiError::NotFound("no such token"),
        other => auth_failed(other),
    })?;
    info!(by = %who.name, %name, "token revoked over the API");
    Ok(Json(json!({ "revoked": name })).into_response())
}
