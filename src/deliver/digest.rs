//! One daily digest or reminder of one subscription, sent by the engine when its slot is
//! due ([`super::schedule`]).
//!
//! * **Digest** (`--digest-at HH:MM`): the subscription's pending deliveries (the state
//!   changes since the last digest, at most `deliver.digest_max`) and the incidents still
//!   open in its scope and filters, in one message. The deliveries are marked delivered
//!   only when the receiver took the digest: at least once, like single events.
//! * **Reminder** (`--remind-days N` without a digest): the incidents open longer than N
//!   days, once a day at `deliver.reminder_at`; nothing is sent when there are none. A
//!   digest with `--remind-days` marks those incidents in its list.
//!
//! A webhook receives JSON (`kind` `digest` or `reminder`, `changes` with the events'
//! payloads, `open_incidents`); robots markdown; e-mail plain text. The `event_id` of a
//! digest is a UUID v5 of (subscription, slot), so a resent digest keeps its id. A failed
//! digest is retried after `deliver.backoff_max_ms`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{json, Value};
use uuid::Uuid;

use super::backoff::{Next, Policy};
use super::filter::{Filters, Scope};
use super::{render, DeliverError, Outcome, Target};
use crate::store::deliveries::{self, Claimed};
use crate::store::digests::{self, OpenIncident};
use crate::store::StoreError;
use crate::telemetry;

/// Most open incidents read for one digest.
const OPEN_MAX: i64 = 2_000;
/// Most lines per section of a digest's text (the JSON carries everything).
const LINES_MAX: usize = 50;

/// A digest (or reminder) to send, already claimed.
pub(super) struct DigestJob {
    pub(super) pool: Pool,
    pub(super) target: Arc<Target>,
    pub(super) ctx: Arc<render::Context>,
    pub(super) policy: Policy,
    pub(super) lease: Duration,
    pub(super) max: i64,
    pub(super) scope: Scope,
    pub(super) filters: Filters,
    pub(super) from: DateTime<Utc>,
    pub(super) slot: DateTime<Utc>,
}

/// The stable event id of a subscription's digest of one slot.
pub fn digest_id(subscription: i64, slot: DateTime<Utc>) -> Uuid {
    let name = format!("soilmon-digest:{subscription}:{}", slot.to_rfc3339());
    Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes())
}

/// Whether an open incident passes a subscription's filters (its states do not apply: an
/// open incident is listed whatever changed it).
pub fn incident_matches(filters: &Filters, scope: &Scope, i: &OpenIncident) -> bool {
    let f = Filters {
        states: Vec::new(),
        ..filters.clone()
    };
    f.matches(
        scope,
        &json!({"state": "opened", "county_code": i.county_code, "metal": i.metal,
                "level": i.level, "land_use": i.land_use}),
    )
}

fn incident_json(i: &OpenIncident) -> Value {
    json!({"incident_id": i.incident_id, "point_id": i.point_id, "point_name": i.point_name,
           "county_code": i.county_code, "metal": i.metal, "level": i.level,
           "opened_sampled_at": i.opened_sampled_at})
}

impl DigestJob {
    /// Sends the digest; the slot when it was sent (or when there was nothing to remind).
    pub(super) async fn run(self) -> super::engine::Done {
        let sent = match self.send().await {
            Ok(s) => s,
            Err(e) => {
                // Its lease runs out and it is tried again.
                telemetry::delivery_engine_failed("a digest", &e);
                None
            }
        };
        super::engine::Done::Digest(self.target.id, sent)
    }

    async fn send(&self) -> Result<Option<DateTime<Utc>>, DeliverError> {
        let db = self.pool.get().await.map_err(StoreError::from)?;
        let id = self.target.id;
        let digest = self.target.options.digest_at.is_some();
        let claimed = if digest {
            deliveries::claim_following(&db, id, 0, self.max, self.lease).await?
        } else {
            Vec::new()
        };
        let counties = match &self.scope {
            Scope::All => None,
            Scope::Counties(c) => Some(c.as_slice()),
        };
        let mut open = digests::open_incidents(&db, counties, OPEN_MAX).await?;
        open.retain(|i| incident_matches(&self.filters, &self.scope, i));
        let remind = self.target.options.remind_days;
        if !digest {
            let days = chrono::Duration::days(remind.unwrap_or(0).into());
            open.retain(|i| self.slot - i.opened_sampled_at > days);
            if open.is_empty() {
                digests::sent(&db, id, self.slot).await?;
                return Ok(Some(self.slot));
            }
        }
        drop(db);
        let events: Vec<render::Event<'_>> = claimed.iter().map(render::Event::of).collect();
        let message = self.ctx.digest(
            &render::Digest {
                from: self.from,
                to: self.slot,
                changes: digest.then_some(events.as_slice()),
                open: &open,
                remind_days: remind,
            },
            LINES_MAX,
        );
        let event_id = digest_id(id, self.slot);
        let body = json!({
            "event_id": event_id,
            "kind": if digest { "digest" } else { "reminder" },
            "subscription": self.target.name,
            "from": self.from,
            "to": self.slot,
            "remind_days": remind,
            "changes": claimed.iter().map(|c| &c.event.payload).collect::<Vec<_>>(),
            "open_incidents": open.iter().map(incident_json).collect::<Vec<_>>(),
        });
        let attempt = claimed.first().map_or(1, |c| c.attempts);
        let outcome = self
            .target
            .send_message(&message, &event_id.to_string(), Some(&body), attempt)
            .await;
        self.record(&claimed, outcome, attempt).await
    }

    async fn record(
        &self,
        claimed: &[Claimed],
        outcome: Outcome,
        attempt: i32,
    ) -> Result<Option<DateTime<Utc>>, DeliverError> {
        let mut db = self.pool.get().await.map_err(StoreError::from)?;
        let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();
        let channel = self.target.channel.as_str();
        let events = ids.len().max(1);
        match outcome {
            Outcome::Delivered { .. } => {
                deliveries::mark_delivered(&mut db, &ids).await?;
                digests::sent(&db, self.target.id, self.slot).await?;
                telemetry::delivery_attempted(
                    channel,
                    &self.target.name,
                    events,
                    attempt,
                    "delivered",
                    None,
                );
                Ok(Some(self.slot))
            }
            Outcome::Failed { error, retry_after } => {
                let retry = retry_after.unwrap_or(self.policy.max);
                let next = claimed.first().map(|c| {
                    self.policy.after_failure(
                        c.attempts,
                        c.created_at,
                        Utc::now(),
                        retry_after,
                        rand::random::<f64>(),
                    )
                });
                let (retry_in, label) = match next {
                    Some(Next::Dead) => (None, "dead"),
                    _ => (Some(retry), "retry"),
                };
                deliveries::mark_failed(&mut db, &ids, &error, retry_in).await?;
                digests::failed(&db, self.target.id, retry).await?;
                telemetry::delivery_attempted(
                    channel,
                    &self.target.name,
                    events,
                    attempt,
                    label,
                    Some(&error),
                );
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident(county: &str, metal: &str, level: &str) -> OpenIncident {
        OpenIncident {
            incident_id: Uuid::nil(),
            point_id: "p".into(),
            point_name: None,
            county_code: county.into(),
            metal: metal.into(),
            level: level.into(),
            land_use: Some("paddy".into()),
            opened_sampled_at: Utc::now(),
        }
    }

    #[test]
    fn open_incidents_follow_the_filters_but_not_the_states() {
        let f = Filters {
            metals: vec!["Cd".into()],
            states: vec!["cleared".into()],
            ..Filters::default()
        };
        let s = Scope::Counties(vec!["441781".into()]);
        assert!(incident_matches(
            &f,
            &s,
            &incident("441781", "Cd", "screening")
        ));
        assert!(!incident_matches(
            &f,
            &s,
            &incident("441781", "Pb", "screening")
        ));
        assert!(!incident_matches(
            &f,
            &s,
            &incident("441702", "Cd", "screening")
        ));
    }

    #[test]
    fn digest_ids_are_stable_per_slot() {
        let t = Utc::now();
        assert_eq!(digest_id(1, t), digest_id(1, t));
        assert_ne!(digest_id(1, t), digest_id(2, t));
    }
}
