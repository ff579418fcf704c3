//! The console's HTML pages: the bureau map and feed, the incident page with its chart and
//! workflow, the point page with its samples and downloads, the lab upload page and the
//! admin lists. Each takes a [`Viewer`] of the roles it allows; county data is read through
//! the viewer's scope, so another county's incident or point is the same 404 as a missing
//! one.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::data::{db, failed, SERIES_LIMIT};
use super::export::{self, Cell};
use super::session::home_of;
use super::{PageError, Viewer};
use crate::domain::metal::Metal;
use crate::domain::workflow::{Action, Status};
use crate::http::auth::{self, Principal};
use crate::http::caller::{AdminOnly, BureauOrAdmin, LabOnly};
use crate::http::AppState;
use crate::store::console::{self, ActionError, ActionRecord, BatchSummary, IncidentView};
use crate::store::identities::{self, IdentityKind};

/// `GET /console`: the viewer's first page, or the sign-in page.
pub async fn home(who: Option<axum::Extension<Principal>>) -> Response {
    match who {
        Some(p) => Redirect::to(home_of(p.role)).into_response(),
        None => Redirect::to("/console/login").into_response(),
    }
}

#[derive(Serialize)]
struct MapPage<'a> {
    metals: Vec<&'static str>,
    tiles_url: &'a str,
    tiles_attribution: &'a str,
}

/// `GET /console/map`: the map of the viewer's points (data from `/console/data/map`).
pub async fn map(State(st): State<Arc<AppState>>, v: Viewer<BureauOrAdmin>) -> Response {
    let c = &st.settings.console;
    v.render(
        "map.html",
        MapPage {
            metals: Metal::ALL.iter().map(|m| m.symbol()).collect(),
            tiles_url: &c.tiles_url,
            tiles_attribution: &c.tiles_attribution,
        },
    )
}

#[derive(Serialize)]
struct FeedPage {
    metals: Vec<&'static str>,
}

/// `GET /console/feed`: the live alert feed (polls `/console/data/feed`).
pub async fn feed(v: Viewer<BureauOrAdmin>) -> Response {
    v.render(
        "feed.html",
        FeedPage {
            metals: Metal::ALL.iter().map(|m| m.symbol()).collect(),
        },
    )
}

#[derive(Serialize)]
struct IncidentPage {
    incident: IncidentView,
    events: Vec<Value>,
    /// The newest event: thresholds, standard, table, pH band, pH assumed.
    basis: Value,
    actions: Vec<ActionRecord>,
    status: Status,
    choices: Vec<&'static str>,
    refused: Option<String>,
}

/// Query of the incident page (a refused action comes back with its reason code).
#[derive(Deserialize)]
pub struct IncidentQuery {
    /// Reason code of a refused action.
    pub refused: Option<String>,
}

/// `GET /console/incidents/{id}`.
pub async fn incident(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
    Query(q): Query<IncidentQuery>,
) -> Result<Response, PageError> {
    let id = Uuid::parse_str(&id).map_err(|_| PageError::NotFound(v.lang))?;
    let client = db(&st, v.lang).await?;
    let inc = console::incident(&client, v.caller.scope(), id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    let events = console::incident_events(&client, id)
        .await
        .map_err(failed(v.lang))?;
    let actions = console::actions(&client, id)
        .await
        .map_err(failed(v.lang))?;
    let status = Status::of(actions.iter().map(|a| (a.action, a.detail.as_str())));
    let basis = events.last().cloned().unwrap_or(Value::Null);
    let refused = q
        .refused
        .filter(|r| r.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    Ok(v.render(
        "incident.html",
        IncidentPage {
            incident: inc,
            events,
            basis,
            actions,
            status,
            choices: Action::ALL.iter().map(|a| a.as_str()).collect(),
            refused,
        },
    ))
}

/// The workflow form of the incident page.
#[derive(Deserialize)]
pub struct ActForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
    /// `acknowledge`, `assign`, `note`, `investigate` or `close`.
    pub action: String,
    /// Person, note or reason.
    #[serde(default)]
    pub detail: String,
}

/// `POST /console/incidents/{id}/actions`: records one workflow action (archive + outbox),
/// then shows the incident again.
pub async fn act(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
    Form(form): Form<ActForm>,
) -> Result<Response, PageError> {
    if !v.csrf_ok(&form.csrf) {
        tracing::warn!(identity = %v.caller.name, "console: action without a valid CSRF token");
        return Err(PageError::Csrf(v.lang));
    }
    let uuid = Uuid::parse_str(&id).map_err(|_| PageError::NotFound(v.lang))?;
    let action = Action::parse(&form.action)
        .ok_or_else(|| PageError::BadRequest(v.lang, "unknown_action".into()))?;
    let mut client = db(&st, v.lang).await?;
    let prefix = st.settings.mqtt.topic_prefix.clone();
    let topic = move |i: &IncidentView| {
        format!(
            "{prefix}/alerts/{}/{}/{}/action",
            i.county_code, i.point_id, i.metal
        )
    };
    let detail = form.detail.trim();
    let page = format!("/console/incidents/{uuid}");
    match console::record_action(
        &mut client,
        v.caller.scope(),
        uuid,
        action,
        &v.caller.name,
        detail,
        topic,
    )
    .await
    {
        Ok(_) => {
            st.outbox.notify_one();
            tracing::info!(identity = %v.caller.name, incident = %uuid,
                action = action.as_str(), "console: incident action recorded");
            Ok(Redirect::to(&page).into_response())
        }
        Err(ActionError::NotFound) => Err(PageError::NotFound(v.lang)),
        Err(ActionError::Refused(r)) => {
            Ok(Redirect::to(&format!("{page}?refused={r}")).into_response())
        }
        Err(ActionError::Store(e)) => Err(failed(v.lang)(e)),
    }
}

#[derive(Serialize)]
struct PointPage {
    point: console::MapPoint,
    metals: Vec<String>,
    samples: Vec<console::SampleRow>,
}

/// `GET /console/points/{id}`: the samples of a point, per metal (chart and table).
pub async fn point(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let client = db(&st, v.lang).await?;
    let point = console::point(&client, v.caller.scope(), &id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    let samples = console::samples(&client, &id, None, 2_000)
        .await
        .map_err(failed(v.lang))?;
    let mut metals: Vec<String> = samples.iter().map(|s| s.metal.clone()).collect();
    metals.sort();
    metals.dedup();
    Ok(v.render(
        "point.html",
        PointPage {
            point,
            metals,
            samples,
        },
    ))
}

/// The samples of a point in the viewer's scope (404 otherwise), for the downloads.
async fn point_samples(
    st: &AppState,
    v: &Viewer<BureauOrAdmin>,
    id: &str,
) -> Result<Vec<console::SampleRow>, PageError> {
    let client = db(st, v.lang).await?;
    console::point(&client, v.caller.scope(), id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    console::samples(&client, id, None, SERIES_LIMIT * 10)
        .await
        .map_err(failed(v.lang))
}

/// A download response.
pub fn attachment(body: Vec<u8>, ctype: &'static str, filename: &str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    let safe: String = filename
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// `GET /console/points/{id}/samples.csv` (UTF-8 with BOM).
pub async fn samples_csv(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let rows = point_samples(&st, &v, &id).await?;
    let mut out = export::BOM.to_vec();
    let header: Vec<Cell> = export::SAMPLE_HEADER
        .iter()
        .map(|h| Cell::Text((*h).into()))
        .collect();
    out.extend(export::csv_line(&header));
    for r in &rows {
        out.extend(export::csv_line(&export::sample_cells(r)));
    }
    Ok(attachment(
        out,
        "text/csv; charset=utf-8",
        &format!("{id}-samples.csv"),
    ))
}

/// `GET /console/points/{id}/samples.xlsx`.
pub async fn samples_xlsx(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let rows = point_samples(&st, &v, &id).await?;
    let book = export::xlsx(export::SAMPLE_HEADER, rows.iter().map(export::sample_cells)).map_err(
        |e| {
            tracing::error!(error = %e, "console: xlsx failed");
            PageError::Unavailable(v.lang)
        },
    )?;
    Ok(attachment(
        book,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &format!("{id}-samples.xlsx"),
    ))
}

#[derive(Serialize)]
struct LabPage {
    batches: Vec<BatchSummary>,
}

/// `GET /console/lab`: drag-and-drop upload (posts to `POST /v1/lab/batches` with the
/// session and its CSRF header), the report, and the lab's batch history.
pub async fn lab(
    State(st): State<Arc<AppState>>,
    v: Viewer<LabOnly>,
) -> Result<Response, PageError> {
    let client = db(&st, v.lang).await?;
    let batches = console::batches(&client, Some(&v.caller.name), 50)
        .await
        .map_err(failed(v.lang))?;
    Ok(v.render("lab.html", LabPage { batches }))
}

/// Query of the points list.
#[derive(Deserialize)]
pub struct SearchQuery {
    /// Part of a point id or name.
    #[serde(default)]
    pub q: String,
}

#[derive(Serialize)]
struct PointsPage {
    q: String,
    points: Vec<console::MapPoint>,
}

/// `GET /console/admin/points?q=…`: the registry, searchable (admins only: 403 else).
pub async fn admin_points(
    State(st): State<Arc<AppState>>,
    v: Viewer<AdminOnly>,
    Query(q): Query<SearchQuery>,
) -> Result<Response, PageError> {
    let client = db(&st, v.lang).await?;
    let points = console::search_points(&client, q.q.trim(), 500)
        .await
        .map_err(failed(v.lang))?;
    Ok(v.render(
        "admin_points.html",
        PointsPage {
            q: q.q.trim().to_string(),
            points,
        },
    ))
}

#[derive(Serialize)]
struct Named {
    name: String,
    kind: String,
    counties: String,
    revoked: bool,
}

#[derive(Serialize)]
struct AccessPage {
    stations: Vec<Named>,
    bureaus: Vec<Named>,
    tokens: Vec<Named>,
}

/// `GET /console/admin/access`: stations, bureaus (broker identities) and API tokens, read
/// only (no secrets; add and revoke with the CLI).
pub async fn admin_access(
    State(st): State<Arc<AppState>>,
    v: Viewer<AdminOnly>,
) -> Result<Response, PageError> {
    let client = db(&st, v.lang).await?;
    let all = identities::list(&client, None)
        .await
        .map_err(failed(v.lang))?;
    let named = |kind: IdentityKind| -> Vec<Named> {
        all.iter()
            .filter(|i| i.kind == kind)
            .map(|i| Named {
                name: i.username.clone(),
                kind: kind.as_str().into(),
                counties: if i.all_counties {
                    "*".into()
                } else {
                    i.counties.join(",")
                },
                revoked: i.revoked_at.is_some(),
            })
            .collect()
    };
    let tokens = auth::entries(&st.settings.http.tokens_file)
        .unwrap_or_default()
        .into_iter()
        .map(|p| Named {
            name: p.name,
            kind: p.role.as_str().into(),
            counties: match p.scope {
                crate::store::queries::Scope::All => "*".into(),
                crate::store::queries::Scope::Counties(c) => c.join(","),
            },
            revoked: false,
        })
        .collect();
    Ok(v.render(
        "admin_access.html",
        AccessPage {
            stations: named(IdentityKind::Station),
            bureaus: named(IdentityKind::Bureau),
            tokens,
        },
    ))
}
