//! Alert subscriptions and their deliveries over the API: what `soilmon subscriptions` and
//! `soilmon deliveries` do, through the same library calls ([`crate::deliver::manage`]).
//!
//! **Who.** An `admin` token manages every subscription. A `bureau` token manages only the
//! subscriptions of the bureau broker identity of its own name (`soilmon bureaus add NAME`
//! and `soilmon tokens add NAME --role bureau` with the same name), for counties within its
//! own token's counties; another bureau's subscription answers the same 404 as a missing one.
//!
//! | route | answers |
//! |---|---|
//! | `GET /v1/subscriptions` | `{"count", "subscriptions": [{"name", "bureau", "channel", "target", "filters", "options", "state", "pending", "oldest_pending", "oldest_pending_secs", "dead", "last_error"}]}` (no secrets; a robot's token redacted) |
//! | `POST /v1/subscriptions` (JSON: the `soilmon subscriptions add` options, `secret` for the key / robot secret / SMTP password) | `201 {"name", "channel", "target", "bureau", "filters", "secret"?}`: a generated webhook key once; `400` with the reason |
//! | `POST /v1/subscriptions/{name}/test` | `{"delivered", "answer"}`: the receiver's answer, or why not |
//! | `POST /v1/subscriptions/{name}/pause`, `…/resume` | `{"name", "state"}` |
//! | `DELETE /v1/subscriptions/{name}` | `{"removed", "cancelled"}` |
//! | `GET /v1/deliveries?failed=true&subscription=&limit=` | the newest deliveries (state, attempts, last error) |
//! | `POST /v1/deliveries/retry` `{"ids": [..]}` or `{"subscription"}` or `{"all": true}` | `{"retried": n}` |

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::auth::{Principal, Role};
use super::caller::{BureauOrAdmin, Caller};
use super::openapi::{ApiRoutes, Method::*};
use super::{limit_of, listed, ApiError, AppState};
use crate::deliver::filter::Scope;
use crate::deliver::manage::{self, Actor, ManageError, NewRequest};
use crate::store::queries;
use crate::store::subscriptions::Overview;

/// The subscription routes, merged into [`super::api_routes`].
pub(super) fn routes() -> ApiRoutes {
    ApiRoutes::new()
        .add(Get, "/v1/subscriptions", "bureau, admin", "alert subscriptions with their queues (no secrets); a bureau sees its own", list)
        .add(Post, "/v1/subscriptions", "bureau, admin", "add a subscription (the `subscriptions add` options as JSON, `secret`): 201, a generated webhook key once; 400 with the reason", add)
        .add(Post, "/v1/subscriptions/{name}/test", "bureau, admin", "send a test message through the real channel: {\"delivered\", \"answer\"}", test)
        .add(Post, "/v1/subscriptions/{name}/pause", "bureau, admin", "pause a subscription (its alerts queue up)", pause)
        .add(Post, "/v1/subscriptions/{name}/resume", "bureau, admin", "resume a subscription (the queue is delivered in order)", resume)
        .add(Delete, "/v1/subscriptions/{name}", "bureau, admin", "remove a subscription (undelivered deliveries cancelled, secrets deleted)", remove)
        .add(Get, "/v1/deliveries", "bureau, admin", "the newest deliveries (failed=true: dead letters; subscription, limit)", deliveries)
        .add(Post, "/v1/deliveries/retry", "bureau, admin", "dead letters back in the queue {\"ids\"}|{\"subscription\"}|{\"all\": true}", retry)
}

/// On whose behalf a console or API request manages subscriptions (see the module docs).
#[derive(Debug, Clone)]
pub struct Who {
    bureau: Option<String>,
    counties: Scope,
}

impl Who {
    /// The manager a principal is: an admin every subscription, a bureau its own.
    pub fn of(p: &Principal) -> Who {
        match p.role {
            Role::Bureau => Who {
                bureau: Some(p.name.clone()),
                counties: match &p.scope {
                    queries::Scope::All => Scope::All,
                    queries::Scope::Counties(c) => Scope::Counties(c.clone()),
                },
            },
            _ => Who {
                bureau: None,
                counties: Scope::All,
            },
        }
    }

    /// As [`manage`] takes it.
    pub fn actor(&self) -> Actor<'_> {
        Actor {
            bureau: self.bureau.as_deref(),
            counties: &self.counties,
        }
    }
}

/// A management error as the API answers it.
pub fn api_error(e: ManageError) -> ApiError {
    match e {
        ManageError::NotFound(_) => ApiError::NotFound("no such subscription"),
        ManageError::Secrets(crate::deliver::secrets::SecretsError::NotConfigured) => {
            ApiError::Unavailable("deliver.secrets_file is not set on the service")
        }
        ManageError::Channel(e) => ApiError::BadRequest(e.to_string().into()),
        e if e.is_refusal() => ApiError::BadRequest(e.to_string().into()),
        e => {
            warn!(error = %e, "http: subscription management failed");
            ApiError::Internal("subscription management failed; see the service log")
        }
    }
}

/// One subscription as the API lists it.
#[derive(Debug, Serialize)]
pub struct Listed<'a> {
    name: &'a str,
    bureau: &'a str,
    channel: &'a str,
    target: &'a str,
    filters: &'a serde_json::Value,
    options: &'a serde_json::Value,
    state: &'static str,
    pending: i64,
    oldest_pending: Option<chrono::DateTime<Utc>>,
    oldest_pending_secs: Option<i64>,
    dead: i64,
    last_error: Option<&'a str>,
}

impl<'a> Listed<'a> {
    /// The listing of `o` at `now`.
    pub fn of(o: &'a Overview, now: chrono::DateTime<Utc>) -> Listed<'a> {
        Listed {
            name: &o.sub.name,
            bureau: &o.sub.bureau,
            channel: &o.sub.channel,
            target: &o.sub.target,
            filters: &o.sub.filters,
            options: &o.sub.options,
            state: if o.sub.paused { "paused" } else { "active" },
            pending: o.sub.pending,
            oldest_pending: o.oldest_pending,
            oldest_pending_secs: o.oldest_pending.map(|t| (now - t).num_seconds().max(0)),
            dead: o.sub.dead,
            last_error: o.last_error.as_deref(),
        }
    }
}

async fn list(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
) -> Result<Response, ApiError> {
    let me = Who::of(&who);
    let client = st.pool.get().await?;
    let all = manage::list(&client, &me.actor())
        .await
        .map_err(api_error)?;
    let now = Utc::now();
    let items: Vec<Listed<'_>> = all.iter().map(|o| Listed::of(o, now)).collect();
    Ok(listed(items, "subscriptions"))
}

async fn add(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            format!("send {{\"name\", \"bureau\", \"channel\", \"url\", …}}: {e}").into(),
        )
    })?;
    let me = Who::of(&who);
    let client = st.pool.get().await?;
    let added = manage::add(&st.settings.deliver, &client, &me.actor(), &req)
        .await
        .map_err(api_error)?;
    info!(by = %who.name, name = %added.name, channel = added.channel, "subscription added over the API");
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn test(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let me = Who::of(&who);
    let client = st.pool.get().await?;
    let t = manage::test(&st.settings.deliver, &client, &me.actor(), &name)
        .await
        .map_err(api_error)?;
    Ok(Json(t).into_response())
}

async fn paused(
    st: &AppState,
    who: &Principal,
    name: &str,
    paused: bool,
) -> Result<Response, ApiError> {
    let me = Who::of(who);
    let client = st.pool.get().await?;
    manage::set_paused(&client, &me.actor(), name, paused)
        .await
        .map_err(api_error)?;
    let state = if paused { "paused" } else { "active" };
    info!(by = %who.name, %name, state, "subscription paused or resumed over the API");
    Ok(Json(json!({"name": name, "state": state})).into_response())
}

async fn pause(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    paused(&st, &who, &name, true).await
}

async fn resume(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    paused(&st, &who, &name, false).await
}

async fn remove(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let me = Who::of(&who);
    let mut client = st.pool.get().await?;
    let cancelled = manage::remove(&st.settings.deliver, &mut client, &me.actor(), &name)
        .await
        .map_err(api_error)?;
    info!(by = %who.name, %name, cancelled, "subscription removed over the API");
    Ok(Json(json!({"removed": name, "cancelled": cancelled})).into_response())
}

async fn deliveries(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let failed = match q.get("failed").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::BadRequest("failed must be true or false".into())),
    };
    let limit = limit_of(&q)?;
    let me = Who::of(&who);
    let client = st.pool.get().await?;
    let rows = manage::deliveries(
        &client,
        &me.actor(),
        failed,
        q.get("subscription").map(String::as_str),
        limit,
    )
    .await
    .map_err(api_error)?;
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|d| {
            json!({
                "id": d.id, "subscription": d.subscription, "event_id": d.event_id,
                "state": d.state, "attempts": d.attempts, "next_attempt_at": d.next_attempt_at,
                "last_error": d.last_error, "created_at": d.created_at,
                "delivered_at": d.delivered_at,
            })
        })
        .collect();
    Ok(listed(items, "deliveries"))
}

/// The body of `POST /v1/deliveries/retry`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn retry(
    State(st): State<Arc<AppState>>,
    who: Caller<BureauOrAdmin>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: RetryBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(
            format!("send {{\"ids\": [..]}}, {{\"subscription\"}} or {{\"all\": true}}: {e}")
                .into(),
        )
    })?;
    if b.ids.is_empty() && b.subscription.is_none() && !b.all {
        return Err(ApiError::BadRequest(
            "name ids, a subscription or all: true".into(),
        ));
    }
    let me = Who::of(&who);
    let client = st.pool.get().await?;
    let n = manage::retry(&client, &me.actor(), &b.ids, b.subscription.as_deref())
        .await
        .map_err(api_error)?;
    info!(by = %who.name, retried = n, "dead letters retried over the API");
    Ok(Json(json!({ "retried": n })).into_response())
}
