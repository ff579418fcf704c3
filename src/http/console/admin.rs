//! The console's admin pages beyond the lists in [`super::pages`]: the quarantine browser
//! and its replay, and the points import.
//!
//! - `GET /console/admin/quarantine?reason=&station=&since=&until=&status=`: refused station
//!   messages, newest first, filtered by reason, station, time (local time, UTC+8, like the
//!   lab template) and status; each with a checkbox.
//! - `GET /console/admin/quarantine/{id}`: one message whole: its fields, its payload as
//!   text (auto-escaped by the template; control characters shown as `\u{…}`; a payload that
//!   is not UTF-8 byte by byte as `\xNN`) and its replays.
//! - `POST /console/admin/quarantine/replay` (form: `csrf`, `ids` repeated): replays the
//!   selected messages through the same path as `POST /v1/quarantine/replay` and
//!   `soilmon quarantine replay` ([`crate::ingest::replay`]), recorded as by `console:NAME`,
//!   and shows each outcome above the list.
//! - The points import is on the registry page ([`super::pages::admin_points`]): its script
//!   posts the file to `POST /v1/points/import` and lists every bad line.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::Form;
use serde::{Deserialize, Serialize};

use super::data::{db, failed};
use super::{PageError, Viewer};
use crate::domain::sample::RejectCode;
use crate::http::caller::AdminOnly;
use crate::http::AppState;
use crate::ingest::replay::{self, ReplayError, Replayed};
use crate::lab::checks::parse_time;
use crate::store::quarantine::{self, Entry, Filter, Replay};

/// Most entries the quarantine page lists.
const PAGE_LIMIT: i64 = 500;

/// The quarantine page's filters, as the form sends them (empty: no filter).
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct QuarantineQuery {
    /// A reason code.
    #[serde(default)]
    pub reason: String,
    /// A station id.
    #[serde(default)]
    pub station: String,
    /// Received at or after (`YYYY-MM-DDTHH:MM`, local time).
    #[serde(default)]
    pub since: String,
    /// Received before.
    #[serde(default)]
    pub until: String,
    /// `quarantined`, `resolved` or empty.
    #[serde(default)]
    pub status: String,
}

#[derive(Serialize)]
struct QuarantinePage {
    q: QuarantineQuery,
    reasons: Vec<&'static str>,
    entries: Vec<Entry>,
    results: Vec<Replayed>,
}

/// The store's filter from the page's, or the 400 naming the bad field.
fn filter_of(q: &QuarantineQuery, v: &Viewer<AdminOnly>) -> Result<Filter, PageError> {
    let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    // A `datetime-local` input sends `YYYY-MM-DDTHH:MM`; read it as the lab template's times.
    let time = |s: &str, field: &str| match text(s) {
        None => Ok(None),
        Some(t) => parse_time(&t.replacen('T', " ", 1))
            .map(Some)
            .ok_or_else(|| PageError::BadRequest(v.lang, field.to_string())),
    };
    let open = match q.status.as_str() {
        "" => None,
        "quarantined" => Some(true),
        "resolved" => Some(false),
        _ => return Err(PageError::BadRequest(v.lang, "status".into())),
    };
    Ok(Filter {
        reason: text(&q.reason),
        station: text(&q.station),
        since: time(&q.since, "since")?,
        until: time(&q.until, "until")?,
        open,
        limit: PAGE_LIMIT,
    })
}

async fn render_list(
    st: &AppState,
    v: &Viewer<AdminOnly>,
    q: QuarantineQuery,
    results: Vec<Replayed>,
) -> Result<Response, PageError> {
    let filter = filter_of(&q, v)?;
    let client = db(st, v.lang).await?;
    let entries = quarantine::list(&client, &filter)
        .await
        .map_err(failed(v.lang))?;
    Ok(v.render(
        "admin_quarantine.html",
        QuarantinePage {
            q,
            reasons: RejectCode::ALL.iter().map(|c| c.as_str()).collect(),
            entries,
            results,
        },
    ))
}

/// `GET /console/admin/quarantine`: the filtered list (admins only: 403 else).
pub async fn quarantine_list(
    State(st): State<Arc<AppState>>,
    v: Viewer<AdminOnly>,
    Query(q): Query<QuarantineQuery>,
) -> Result<Response, PageError> {
    render_list(&st, &v, q, Vec::new()).await
}

#[derive(Serialize)]
struct EntryPage {
    entry: Entry,
    payload: String,
    utf8: bool,
    replays: Vec<Replay>,
}

/// A payload as page text: UTF-8 with control characters other than line breaks and tabs
/// written `\u{…}`; anything else byte by byte, non-ASCII as `\xNN`. (The template escapes
/// the result for HTML.)
fn visible(raw: &[u8]) -> (String, bool) {
    match std::str::from_utf8(raw) {
        Ok(s) => {
            let text = s
                .chars()
                .map(|c| {
                    if c.is_control() && c != '\n' && c != '\t' {
                        c.escape_unicode().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            (text, true)
        }
        Err(_) => (raw.escape_ascii().to_string(), false),
    }
}

/// `GET /console/admin/quarantine/{id}`: one message with its payload and replays.
pub async fn quarantine_entry(
    State(st): State<Arc<AppState>>,
    v: Viewer<AdminOnly>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: i64 = id.parse().map_err(|_| PageError::NotFound(v.lang))?;
    let client = db(&st, v.lang).await?;
    let shown = quarantine::get(&client, id)
        .await
        .map_err(failed(v.lang))?
        .ok_or(PageError::NotFound(v.lang))?;
    let (payload, utf8) = visible(&shown.raw);
    Ok(v.render(
        "admin_quarantine_entry.html",
        EntryPage {
            entry: shown.entry,
            payload,
            utf8,
            replays: shown.replays,
        },
    ))
}

/// `POST /console/admin/quarantine/replay`: replays the ticked messages (CSRF-checked).
pub async fn quarantine_replay(
    State(st): State<Arc<AppState>>,
    v: Viewer<AdminOnly>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, PageError> {
    v.check_form(&fields)?;
    let ids = super::form_ids(v.lang, &fields)?;
    let mut client = db(&st, v.lang).await?;
    let by = format!("console:{}", v.caller.name);
    let results = replay::replay(&mut client, &st.settings, &st.standards, &ids, &by)
        .await
        .map_err(|e| match e {
            ReplayError::TooMany(_) => PageError::BadRequest(v.lang, "ids".into()),
            ReplayError::Store(e) => failed(v.lang)(e),
        })?;
    // Alerts and reject replies the replay queued.
    st.outbox.notify_one();
    tracing::info!(by = %by, entries = ids.len(), "console: quarantine replay");
    render_list(&st, &v, QuarantineQuery::default(), results).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_show_control_characters_escaped() {
        let (t, utf8) = visible(b"{\"a\":\"x\x07\"}\n<script>");
        assert!(utf8);
        assert_eq!(t, "{\"a\":\"x\\u{7}\"}\n<script>");
        let (t, utf8) = visible(b"\xff\xfeab");
        assert!(!utf8);
        assert_eq!(t, "\\xff\\xfeab");
    }
}
