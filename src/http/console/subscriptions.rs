//! The console's subscriptions page: alert subscriptions (webhook, DingTalk, WeCom, e-mail)
//! with their queues, a form to add one, test / pause / resume / remove, and the dead
//! letters with a retry button. Every rule is [`crate::deliver::manage`]'s, the same as
//! `soilmon subscriptions` and `/v1/subscriptions` apply.
//!
//! **Who.** An admin manages every subscription. A bureau user manages only the
//! subscriptions of the bureau broker identity of its own name, for counties of its own
//! token ([`crate::http::subscriptions::Who`]); it sees nothing of other bureaus'.
//!
//! - `GET /console/subscriptions`: the list, the add form, the dead letters.
//! - `POST /console/subscriptions` (form, CSRF-checked): adds one; a generated webhook key
//!   is shown once, on the answer to this request, and never again; a refusal (a county
//!   outside the bureau's scope, a bad URL…) is shown with its reason, nothing stored.
//! - `POST /console/subscriptions/{name}/{test|pause|resume|remove}` (CSRF-checked): `test`
//!   sends a test message through the real channel and shows the receiver's answer.
//! - `POST /console/deliveries/retry` (form: `csrf`, `ids`): dead letters back in the queue.
//!
//! Secrets typed into the form (a webhook key, a robot's URL with its token, DingTalk's
//! signing secret, an SMTP password) go to `deliver.secrets_file` and are never shown.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Form;
use chrono::{DateTime, FixedOffset, Utc};
use serde::Serialize;
use serde_json::Value;

use super::data::{db, failed};
use super::{PageError, Viewer};
use crate::deliver::filter::{
    FilterError, Filters, LandClass, LEVELS, OPT_IN_STATES, SOURCES, STATES,
};
use crate::deliver::manage::{self, ManageError, NewRequest};
use crate::deliver::Options;
use crate::domain::metal::Metal;
use crate::http::caller::BureauOrAdmin;
use crate::http::subscriptions::Who;
use crate::http::AppState;
use crate::store::identities::{self, IdentityKind};

/// Most dead letters the page lists.
const DEAD_LIMIT: i64 = 200;

/// One subscription row.
#[derive(Serialize)]
struct Row {
    name: String,
    bureau: String,
    channel: String,
    target: String,
    filters: String,
    digest_at: Option<String>,
    remind_days: Option<u32>,
    paused: bool,
    pending: i64,
    oldest_age: String,
    dead: i64,
    last_error: String,
}

/// One dead letter.
#[derive(Serialize)]
struct Dead {
    id: i64,
    subscription: String,
    event_id: String,
    attempts: i32,
    created_at: String,
    last_error: String,
}

/// What the last action came to, shown above the list.
#[derive(Serialize, Default)]
struct Flash {
    /// `added`, `tested`, `paused`, `resumed`, `removed`, `retried`, `refused` (not added)
    /// or `action_refused`.
    kind: &'static str,
    /// The subscription concerned.
    name: String,
    /// Succeeded (a test: delivered).
    ok: bool,
    /// The receiver's answer, the reason of a refusal, a count…
    text: String,
    /// A generated webhook key, shown this once.
    secret: Option<String>,
    /// A county outside the bureau's scope (or the user's own counties) was refused.
    outside_scope: bool,
}

#[derive(Serialize)]
struct County {
    code: String,
    name: String,
}

#[derive(Serialize)]
struct Page {
    subs: Vec<Row>,
    dead: Vec<Dead>,
    bureaus: Vec<String>,
    counties: Vec<County>,
    metals: Vec<&'static str>,
    levels: &'static [&'static str],
    states: Vec<&'static str>,
    sources: &'static [&'static str],
    flash: Option<Flash>,
    /// The viewer is a bureau user (manages its own bureau's subscriptions only).
    own_only: bool,
}

/// `42 s`, `5 min`, `3 h`, `2 d`.
fn age(secs: i64) -> String {
    match secs.max(0) {
        s if s < 120 => format!("{s} s"),
        s if s < 7_200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

/// The stored filters in one line (`county 441781 · metal Cd, Pb · …`), `*` when none.
fn filters_text(v: &Value) -> String {
    let Ok(f) = serde_json::from_value::<Filters>(v.clone()) else {
        return v.to_string();
    };
    let mut parts = Vec::new();
    for (label, list) in [
        ("county", &f.counties),
        ("metal", &f.metals),
        ("level", &f.levels),
        ("state", &f.states),
        ("source", &f.sources),
    ] {
        if !list.is_empty() {
            parts.push(format!("{label} {}", list.join(", ")));
        }
    }
    if let Some(c) = f.land_class {
        let class = match c {
            LandClass::Farmland => "farmland",
            LandClass::Development => "development",
        };
        parts.push(format!("land {class}"));
    }
    if parts.is_empty() {
        "*".into()
    } else {
        parts.join(" · ")
    }
}

/// `YYYY-MM-DD HH:MM:SS` at the deliveries' local offset (`deliver.digest_utc_offset_hours`).
fn local(t: DateTime<Utc>, offset_hours: i32) -> String {
    match FixedOffset::east_opt(offset_hours.saturating_mul(3600)) {
        Some(off) => t
            .with_timezone(&off)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        None => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    }
}

/// Renders the page for `v`, with `flash` above the list and `status`.
async fn render_page(
    st: &AppState,
    v: &Viewer<BureauOrAdmin>,
    flash: Option<Flash>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let who = Who::of(&v.caller);
    let me = who.actor();
    let client = db(st, v.lang).await?;
    let manage_failed = |e: ManageError| {
        tracing::error!(error = %e, "console: subscriptions");
        PageError::Unavailable(v.lang)
    };
    let now = Utc::now();
    let d = &st.settings.deliver;
    let subs = manage::list(&client, &me)
        .await
        .map_err(manage_failed)?
        .into_iter()
        .map(|o| {
            let options: Options =
                serde_json::from_value(o.sub.options.clone()).unwrap_or_default();
            Row {
                filters: filters_text(&o.sub.filters),
                digest_at: options.digest_at,
                remind_days: options.remind_days,
                oldest_age: o
                    .oldest_pending
                    .map_or(String::new(), |t| age((now - t).num_seconds())),
                last_error: o.last_error.unwrap_or_default(),
                name: o.sub.name,
                bureau: o.sub.bureau,
                channel: o.sub.channel,
                target: o.sub.target,
                paused: o.sub.paused,
                pending: o.sub.pending,
                dead: o.sub.dead,
            }
        })
        .collect();
    let dead = manage::deliveries(&client, &me, true, None, DEAD_LIMIT)
        .await
        .map_err(manage_failed)?
        .into_iter()
        .map(|r| Dead {
            id: r.id,
            subscription: r.subscription,
            event_id: r.event_id.to_string(),
            attempts: r.attempts,
            created_at: local(r.created_at, d.digest_utc_offset_hours),
            last_error: r.last_error.unwrap_or_default(),
        })
        .collect();
    let bureaus = identities::list(&client, Some(IdentityKind::Bureau))
        .await
        .map_err(failed(v.lang))?
        .into_iter()
        .filter(|i| i.revoked_at.is_none() && me.owns(&i.username))
        .map(|i| i.username)
        .collect();
    let counties = st
        .settings
        .registry
        .counties
        .iter()
        .filter(|c| me.counties.covers(c))
        .map(|c| County {
            code: c.clone(),
            name: d.county_names.get(c).cloned().unwrap_or_default(),
        })
        .collect();
    let mut r = v.render(
        "subscriptions.html",
        Page {
            subs,
            dead,
            bureaus,
            counties,
            metals: Metal::ALL.iter().map(|m| m.symbol()).collect(),
            levels: &LEVELS,
            states: STATES.iter().chain(&OPT_IN_STATES).copied().collect(),
            sources: &SOURCES,
            flash,
            own_only: me.bureau.is_some(),
        },
    );
    if r.status() == StatusCode::OK {
        *r.status_mut() = status;
    }
    Ok(r)
}

/// `GET /console/subscriptions` (bureaus: their own; admins: all).
pub async fn page(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
) -> Result<Response, PageError> {
    render_page(&st, &v, None, StatusCode::OK).await
}

/// The form's fields, checked for the session's CSRF token.
/// The request of the add form (repeated checkboxes for lists; recipients split on commas,
/// semicolons and white space); a number that does not parse is named.
fn request_of(fields: &[(String, String)]) -> Result<NewRequest, String> {
    let one = |k: &str| {
        fields
            .iter()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let many = |k: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(f, v)| f == k && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect()
    };
    fn number<T: std::str::FromStr>(v: Option<String>, what: &str) -> Result<Option<T>, String> {
        v.map(|t| {
            t.parse::<T>()
                .map_err(|_| format!("{what} {t:?}: not a number"))
        })
        .transpose()
    }
    let to = one("to")
        .map(|t| {
            t.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(NewRequest {
        name: one("name").unwrap_or_default(),
        bureau: one("bureau").unwrap_or_default(),
        channel: one("channel").unwrap_or_default(),
        url: one("url").unwrap_or_default(),
        to,
        from: one("from"),
        digest_at: one("digest_at"),
        remind_days: number(one("remind_days"), "remind days")?,
        concurrency: number(one("concurrency"), "concurrency")?,
        counties: many("county"),
        metals: many("metal"),
        levels: many("level"),
        states: many("state"),
        sources: many("source"),
        land_use: one("land_use"),
        secret: one("secret"),
        ..NewRequest::default()
    })
}

/// `POST /console/subscriptions`: adds a subscription from the form.
pub async fn add(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    v.check_form(&fields)?;
    let refused = |name: String, text: String, outside_scope: bool| Flash {
        kind: "refused",
        name,
        ok: false,
        text,
        secret: None,
        outside_scope,
    };
    let req = match request_of(&fields) {
        Ok(r) => r,
        Err(text) => {
            let f = refused(String::new(), text, false);
            return render_page(&st, &v, Some(f), StatusCode::BAD_REQUEST).await;
        }
    };
    let who = Who::of(&v.caller);
    let client = db(&st, v.lang).await?;
    let (flash, status) = match manage::add(&st.settings.deliver, &client, &who.actor(), &req).await
    {
        Ok(added) => {
            tracing::info!(identity = %v.caller.name, name = %added.name,
                channel = added.channel, "console: subscription added");
            (
                Flash {
                    kind: "added",
                    name: added.name,
                    ok: true,
                    text: format!("{} {}", added.channel, added.target),
                    secret: added.secret,
                    outside_scope: false,
                },
                StatusCode::OK,
            )
        }
        Err(e) if e.is_refusal() || matches!(e, ManageError::Channel(_)) => {
            let outside = matches!(
                e,
                ManageError::Filter(FilterError::OutsideScope(..))
                    | ManageError::OutsideYours { .. }
            );
            tracing::info!(identity = %v.caller.name, reason = %e, "console: subscription refused");
            (
                refused(req.name.clone(), e.to_string(), outside),
                StatusCode::BAD_REQUEST,
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "console: adding a subscription failed");
            (
                refused(req.name.clone(), e.to_string(), false),
                StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    };
    drop(client);
    render_page(&st, &v, Some(flash), status).await
}

/// `POST /console/subscriptions/{name}/{action}`: test, pause, resume or remove.
pub async fn act(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    v.check_form(&fields)?;
    let who = Who::of(&v.caller);
    let me = who.actor();
    let d = &st.settings.deliver;
    let mut client = db(&st, v.lang).await?;
    let done = |kind: &'static str, ok: bool, text: String| Flash {
        kind,
        name: name.clone(),
        ok,
        text,
        secret: None,
        outside_scope: false,
    };
    let outcome = match action.as_str() {
        "test" => manage::test(d, &client, &me, &name)
            .await
            .map(|t| done("tested", t.delivered, t.answer)),
        "pause" => manage::set_paused(&client, &me, &name, true)
            .await
            .map(|()| done("paused", true, String::new())),
        "resume" => manage::set_paused(&client, &me, &name, false)
            .await
            .map(|()| done("resumed", true, String::new())),
        "remove" => manage::remove(d, &mut client, &me, &name)
            .await
            .map(|n| done("removed", true, n.to_string())),
        _ => return Err(PageError::NotFound(v.lang)),
    };
    drop(client);
    match outcome {
        Ok(flash) => {
            tracing::info!(identity = %v.caller.name, %name, action = %action, "console: subscription action");
            render_page(&st, &v, Some(flash), StatusCode::OK).await
        }
        Err(ManageError::NotFound(_)) => Err(PageError::NotFound(v.lang)),
        Err(e) => {
            let status = if e.is_refusal() || matches!(e, ManageError::Channel(_)) {
                StatusCode::BAD_REQUEST
            } else {
                tracing::error!(error = %e, "console: subscription action failed");
                StatusCode::SERVICE_UNAVAILABLE
            };
            let flash = done("action_refused", false, e.to_string());
            render_page(&st, &v, Some(flash), status).await
        }
    }
}

/// `POST /console/deliveries/retry`: the ticked dead letters back in the queue.
pub async fn retry(
    State(st): State<Arc<AppState>>,
    v: Viewer<BureauOrAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    v.check_form(&fields)?;
    let ids = super::form_ids(v.lang, &fields)?;
    let who = Who::of(&v.caller);
    let client = db(&st, v.lang).await?;
    let n = manage::retry(&client, &who.actor(), &ids, None)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "console: retry failed");
            PageError::Unavailable(v.lang)
        })?;
    drop(client);
    tracing::info!(identity = %v.caller.name, retried = n, "console: dead letters retried");
    let flash = Flash {
        kind: "retried",
        ok: n > 0,
        text: n.to_string(),
        ..Flash::default()
    };
    render_page(&st, &v, Some(flash), StatusCode::OK).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_filters_read_shortly() {
        assert_eq!(age(42), "42 s");
        assert_eq!(age(600), "10 min");
        assert_eq!(age(3 * 3600), "3 h");
        assert_eq!(age(3 * 86_400), "3 d");
        let f = serde_json::json!({"counties": ["441781"], "metals": ["Cd", "Pb"], "land_class": "farmland"});
        assert_eq!(
            filters_text(&f),
            "county 441781 · metal Cd, Pb · land farmland"
        );
        assert_eq!(filters_text(&serde_json::json!({})), "*");
    }

    #[test]
    fn the_form_becomes_the_shared_request() {
        let f = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = request_of(&f(&[
            ("name", " yc "),
            ("county", "441781"),
            ("county", "441702"),
            ("metal", "Cd"),
            ("to", "a@x.org, b@x.org;c@x.org"),
            ("remind_days", "7"),
            ("digest_at", ""),
        ]))
        .unwrap_or_default();
        assert_eq!(r.name, "yc");
        assert_eq!(r.counties, ["441781", "441702"]);
        assert_eq!(r.to.len(), 3);
        assert_eq!(r.remind_days, Some(7));
        assert_eq!(r.digest_at, None);
        assert!(request_of(&f(&[("remind_days", "x")])).is_err());
    }
}
