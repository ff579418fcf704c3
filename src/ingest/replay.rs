//! Quarantine replay: a refused message, once its cause is fixed (say `unknown_point` after
//! the point was imported), is parsed again exactly as the collector parses it
//! ([`super::collector::received`]) and stored through the batch writer
//! ([`crate::store::quarantine::replay`]), which records who replayed it and how it came out.
//!
//! The registry is read from the database at each replay, not from the service's snapshot,
//! so a point imported a moment ago counts. The message keeps the time soilmon first
//! received it; "now" for the future-time check is the replay's.

use chrono::Utc;
use deadpool_postgres::Client;
use serde::Serialize;

use super::collector::received;
use crate::config::Settings;
use crate::domain::standard::Standards;
use crate::registry::Registry;
use crate::store::{self, quarantine, Context, StoreError};
use crate::telemetry;

/// Most entries one replay request may name.
pub const MAX_REPLAY_IDS: usize = 1000;

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Too many ids in one request.
    #[error("at most {MAX_REPLAY_IDS} entries per replay, {0} given")]
    TooMany(usize),
    /// The database failed (nothing of the entry being replayed was stored).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of replaying one entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replayed {
    /// Quarantine id.
    pub id: i64,
    /// `stored`, `already_stored`, `refused`, or `not_found` (no such entry).
    pub outcome: &'static str,
    /// The current reason, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Its detail, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Replays the entries `ids` in order, each in its own transaction, as `by`. Alerts and
/// reject replies it queues are in the outbox when it returns.
pub async fn replay(
    client: &mut Client,
    settings: &Settings,
    standards: &Standards,
    ids: &[i64],
    by: &str,
) -> Result<Vec<Replayed>, ReplayError> {
    if ids.len() > MAX_REPLAY_IDS {
        return Err(ReplayError::TooMany(ids.len()));
    }
    let (points, _) = store::points::load(client).await?;
    let registry = Registry::new(points);
    let ctx = Context {
        registry: &registry,
        standards,
        mqtt: &settings.mqtt,
        clear_after: settings.judge.clear_after,
        crops: None,
        tracks: None,
        key_cache: None,
        archive_head: None,
    };
    let mut out = Vec::with_capacity(ids.len());
    for &id in ids {
        let Some(shown) = quarantine::get(client, id).await? else {
            out.push(Replayed {
                id,
                outcome: "not_found",
                reason: None,
                detail: None,
            });
            continue;
        };
        let e = shown.entry;
        let msg = received(
            e.topic,
            shown.raw,
            e.received_at,
            Utc::now(),
            settings,
            &registry,
        );
        let o = quarantine::replay(client, &ctx, id, &msg, by).await?;
        telemetry::quarantine_replayed(id, by, o.outcome, o.reason);
        out.push(Replayed {
            id,
            outcome: o.outcome,
            reason: o.reason,
            detail: o.detail,
        });
    }
    Ok(out)
}
