//! The delivery engine inside `soilmon run`: fans alert and incident-workflow events out of
//! the outbox into `deliveries` rows, claims batches (the due head of each subscription, or
//! of each incident key up to its concurrency, with what follows it) in one statement a
//! round, runs one task per batch (`super::batch`: sent in order, one request after the
//! other) and records the outcomes of every finished batch in one statement; sends the
//! daily digests and reminders when due.
//!
//! It runs beside the MQTT publisher and touches the ingest path nowhere: a slow or dead
//! receiver holds only its own subscription's leases and one of `deliver.workers` tasks
//! (bounded by its timeout and the batch's time budget), while the other subscriptions are
//! claimed and sent in parallel. At least once: a delivery is marked only after its
//! receiver answered; an instance that dies mid-batch leaves leases that run out, and the
//! deliveries are sent again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::backoff::Policy;
use super::batch::Batch;
use super::digest::DigestJob;
use super::filter::{Filters, Scope};
use super::ratelimit::{Plan, Window};
use super::{render, schedule, secrets, DeliverError, Target};
use crate::config::{DeliverConfig, Settings};
use crate::store::deliveries::{self, ClaimLimit, Claimed, FanoutTarget, Mark};
use crate::store::{digests, subscriptions};
use crate::telemetry;

/// The retry policy of the configuration.
pub fn policy(d: &DeliverConfig) -> Policy {
    Policy {
        min: Duration::from_millis(d.backoff_min_ms),
        max: Duration::from_millis(d.backoff_max_ms),
        retry_after_max: Duration::from_secs(d.retry_after_max_secs),
        max_attempts: d.max_attempts,
        max_age: Duration::from_secs(d.max_age_secs),
    }
}

/// The message context of the configuration.
pub fn render_context(d: &DeliverConfig) -> render::Context {
    render::Context {
        county_names: d.county_names.clone(),
        console_base_url: d.console_base_url.clone(),
    }
}

/// The function giving the ids of the subscriptions (of `targets`) that get an event
/// payload; each subscription's filters and scope are parsed once, not once per event. A
/// subscription whose stored filters no longer parse gets nothing (and is reported at
/// refresh).
pub fn matcher(targets: &[FanoutTarget]) -> impl Fn(&serde_json::Value) -> Vec<i64> {
    let parsed: Vec<(i64, Filters, Scope)> = targets
        .iter()
        .filter_map(|t| {
            let scope = if t.all_counties {
                Scope::All
            } else {
                Scope::Counties(t.counties.clone())
            };
            let filters = serde_json::from_value::<Filters>(t.filters.clone()).ok()?;
            Some((t.id, filters, scope))
        })
        .collect();
    move |payload| {
        parsed
            .iter()
            .filter(|(_, f, scope)| f.matches(scope, payload))
            .map(|(id, _, _)| *id)
            .collect()
    }
}

/// The ids of the subscriptions (of `targets`) that get the event `payload` (see
/// [`matcher`]).
pub fn matching(targets: &[FanoutTarget], payload: &serde_json::Value) -> Vec<i64> {
    matcher(targets)(payload)
}

/// A usable subscription and what it was built from (rebuilt only when that changes).
struct Built {
    fingerprint: String,
    target: Arc<Target>,
    /// Its creation and its bureau's scope (digests).
    created_at: chrono::DateTime<chrono::Utc>,
    scope: Scope,
    filters: serde_json::Value,
}

/// What a finished task was.
pub(super) enum Done {
    /// A batch of this subscription (sent one by one, or folded into one robot message),
    /// with what to record for each of its deliveries.
    Delivery(i64, Vec<(i64, Mark)>),
    /// The digest of this subscription; the slot, if it was sent.
    Digest(i64, Option<chrono::DateTime<chrono::Utc>>),
}

struct Engine {
    settings: Arc<Settings>,
    pool: Pool,
    policy: Policy,
    ctx: Arc<render::Context>,
    lease: Duration,
    targets: HashMap<i64, Built>,
    unusable: HashMap<i64, String>,
    windows: HashMap<i64, Window>,
    in_flight: HashMap<i64, usize>,
    digesting: HashSet<i64>,
    digest_sent: HashMap<i64, Option<chrono::DateTime<chrono::Utc>>>,
    tasks: JoinSet<Done>,
    /// Outcomes of finished batches not yet recorded (recorded in one statement a round).
    marks: Vec<(i64, Mark)>,
    shutdown: CancellationToken,
    refreshed: Option<Instant>,
    stats: Option<Instant>,
}

/// Runs the engine until shutdown.
pub async fn run(settings: Arc<Settings>, pool: Pool, shutdown: CancellationToken) {
    let d = &settings.deliver;
    let mut e = Engine {
        policy: policy(d),
        ctx: Arc::new(render_context(d)),
        lease: Duration::from_secs(d.lease_secs),
        settings: settings.clone(),
        pool,
        targets: HashMap::new(),
        unusable: HashMap::new(),
        windows: HashMap::new(),
        in_flight: HashMap::new(),
        digesting: HashSet::new(),
        digest_sent: HashMap::new(),
        tasks: JoinSet::new(),
        marks: Vec::new(),
        shutdown: shutdown.clone(),
        refreshed: None,
        stats: None,
    };
    let poll = Duration::from_millis(d.poll_ms);
    while !shutdown.is_cancelled() {
        e.round().await;
        tokio::select! {
            Some(done) = e.tasks.join_next(), if !e.tasks.is_empty() => e.finished(done),
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => {}
        }
        while let Some(done) = e.tasks.try_join_next() {
            e.finished(done);
        }
    }
    // Batches stop at shutdown (between two requests): give the requests in flight a
    // moment to be answered, and record every outcome; what is not recorded keeps its lease
    // and is sent again after it.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = e.tasks.join_next().await {
            e.finished(done);
        }
    })
    .await;
    e.tasks.abort_all();
    e.record().await;
}

impl Engine {
    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        match done {
            Ok(Done::Delivery(id, marks)) => {
                self.marks.extend(marks);
                if let Some(n) = self.in_flight.get_mut(&id) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.in_flight.remove(&id);
                    }
                }
            }
            Ok(Done::Digest(id, sent)) => {
                self.digesting.remove(&id);
                if let Some(slot) = sent {
                    self.digest_sent.insert(id, Some(slot));
                }
            }
            Err(e) => {
                // A panicked send: its lease runs out and it is claimed again; the
                // in-flight counts are reset once no task runs.
                telemetry::delivery_engine_failed("a delivery task", &e);
                if self.tasks.is_empty() {
                    self.in_flight.clear();
                    self.digesting.clear();
                }
            }
        }
    }

    fn in_flight_total(&self) -> usize {
        self.in_flight.values().sum::<usize>() + self.digesting.len()
    }

    async fn round(&mut self) {
        let d = &self.settings.deliver;
        if self
            .refreshed
            .is_none_or_elapsed(Duration::from_secs(d.refresh_secs))
        {
            if let Err(e) = self.refresh().await {
                telemetry::delivery_engine_failed("reading subscriptions", &e);
            }
            self.refreshed = Some(Instant::now());
        }
        if let Err(e) = self.fan_out().await {
            telemetry::delivery_engine_failed("fan-out", &e);
        }
        self.record().await;
        if let Err(e) = self.dispatch().await {
            telemetry::delivery_engine_failed("claiming deliveries", &e);
        }
        if let Err(e) = self.digests().await {
            telemetry::delivery_engine_failed("digests", &e);
        }
        if self.stats.is_none_or_elapsed(Duration::from_secs(5)) {
            self.stats = Some(Instant::now());
            match self.pool.get().await {
                Ok(db) => match deliveries::queue_stats(&db).await {
                    Ok(rows) => {
                        for (name, depth, age) in rows {
                            telemetry::delivery_queue(&name, depth, age);
                        }
                    }
                    Err(e) => telemetry::delivery_engine_failed("queue statistics", &e),
                },
                Err(e) => telemetry::delivery_engine_failed("queue statistics", &e),
            }
        }
    }

    /// Re-reads the subscriptions and the secrets file; rebuilds what changed.
    async fn refresh(&mut self) -> Result<(), DeliverError> {
        let db = self
            .pool
            .get()
            .await
            .map_err(crate::store::StoreError::from)?;
        let subs = subscriptions::list_to_send(&db).await?;
        self.digest_sent = digests::last_sent(&db).await?.into_iter().collect();
        drop(db);
        let d = &self.settings.deliver;
        let all_secrets = match secrets::load(&d.secrets_file) {
            Ok(s) => s,
            Err(secrets::SecretsError::NotConfigured) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        let timeout = Duration::from_millis(d.timeout_ms);
        let mut live = HashSet::new();
        for s in &subs {
            live.insert(s.id);
            let sec = all_secrets.get(&s.name);
            let fingerprint = format!(
                "{}|{}|{}|{:?}|{}|{:?}|{}",
                s.target, s.options, s.channel, sec, s.filters, s.bureau_counties, s.bureau_all
            );
            if self
                .targets
                .get(&s.id)
                .is_some_and(|b| b.fingerprint == fingerprint)
            {
                continue;
            }
            match Target::build(s, sec, timeout) {
                Ok(t) => {
                    let target = Arc::new(t);
                    self.unusable.remove(&s.id);
                    if target.channel.is_robot() {
                        self.windows.entry(s.id).or_insert_with(|| {
                            Window::new(d.robot_per_minute, Duration::from_secs(60))
                        });
                    }
                    let scope = if s.bureau_all {
                        Scope::All
                    } else {
                        Scope::Counties(s.bureau_counties.clone())
                    };
                    self.targets.insert(
                        s.id,
                        Built {
                            fingerprint,
                            target,
                            created_at: s.created_at,
                            scope,
                            filters: s.filters.clone(),
                        },
                    );
                }
                Err(e) => {
                    if self.unusable.get(&s.id) != Some(&e.to_string()) {
                        telemetry::subscription_unusable(&s.name, &e);
                    }
                    self.unusable.insert(s.id, e.to_string());
                    self.targets.remove(&s.id);
                }
            }
        }
        self.targets.retain(|id, _| live.contains(id));
        self.unusable.retain(|id, _| live.contains(id));
        self.windows.retain(|id, _| live.contains(id));
        Ok(())
    }

    /// Records the outcomes of the batches finished since the last round, in one
    /// statement. On a database error they are kept and recorded next round (their leases
    /// hold the deliveries meanwhile).
    async fn record(&mut self) {
        if self.marks.is_empty() {
            return;
        }
        let done = match self.pool.get().await {
            Ok(mut db) => deliveries::record(&mut db, &self.marks).await,
            Err(e) => Err(crate::store::StoreError::from(e)),
        };
        match done {
            Ok(_) => self.marks.clear(),
            Err(e) => telemetry::delivery_engine_failed("recording deliveries", &e),
        }
    }

    async fn fan_out(&mut self) -> Result<(), DeliverError> {
        let mut db = self
            .pool
            .get()
            .await
            .map_err(crate::store::StoreError::from)?;
        let batch = self.settings.deliver.fanout_batch;
        loop {
            let f = deliveries::fan_out(&mut db, batch, matcher).await?;
            if f.events > 0 {
                telemetry::deliveries_fanned_out(f.events, f.deliveries);
            }
            if (f.events as i64) < batch {
                return Ok(());
            }
        }
    }

    /// The subscriptions not to claim for now (unusable, robots waiting for their window,
    /// digests) and each loaded subscription's concurrency and batch size.
    fn claim_limits(&mut self, now: Instant) -> (Vec<i64>, Vec<ClaimLimit>) {
        let mut exclude: Vec<i64> = self.unusable.keys().copied().collect();
        for (id, w) in self.windows.iter_mut() {
            if matches!(w.plan(now), Plan::WaitUntil(_)) {
                exclude.push(*id);
            }
        }
        // Digest subscriptions are sent by `digests`, all at once.
        exclude.extend(
            self.targets
                .iter()
                .filter(|(_, b)| b.target.options.digest_at.is_some())
                .map(|(id, _)| *id),
        );
        let d = &self.settings.deliver;
        let default_limit = d.per_subscription;
        let limits: Vec<ClaimLimit> = self
            .targets
            .iter()
            .map(|(id, b)| ClaimLimit {
                subscription_id: *id,
                concurrency: concurrency(&b.target, default_limit),
                // A robot sends one message per claim (folded past its rate limit).
                batch: if b.target.channel.is_robot() {
                    1
                } else {
                    d.claim_batch
                },
            })
            .collect();
        (exclude, limits)
    }

    /// Claims batches for the free workers and starts a task for each.
    async fn dispatch(&mut self) -> Result<(), DeliverError> {
        let free = self
            .settings
            .deliver
            .workers
            .saturating_sub(self.in_flight_total());
        if free == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let (exclude, limits) = self.claim_limits(now);
        let d = &self.settings.deliver;
        let default_limit = d.per_subscription;
        let mut db = self
            .pool
            .get()
            .await
            .map_err(crate::store::StoreError::from)?;
        let claimed = deliveries::claim_batches(
            &mut db,
            free as i64,
            &exclude,
            &limits,
            i32::try_from(default_limit).unwrap_or(i32::MAX),
            d.claim_batch,
            self.lease,
        )
        .await?;
        let unknown: Vec<i64> = claimed
            .iter()
            .filter(|h| !self.targets.contains_key(&h.subscription_id))
            .map(|h| h.id)
            .collect();
        if !unknown.is_empty() {
            // Subscriptions created (or fixed) since the last refresh: give their deliveries
            // back and read the subscriptions again before the next round.
            deliveries::release(&mut db, &unknown).await?;
            self.refreshed = None;
        }
        for batch in batches(claimed) {
            let Some(target) = self
                .targets
                .get(&batch[0].subscription_id)
                .map(|b| b.target.clone())
            else {
                continue;
            };
            let mut batch = batch;
            let mut folded = false;
            if let Some(w) = self.windows.get_mut(&target.id) {
                if w.plan(now) == Plan::Fold {
                    let more = self.settings.deliver.fold_max - 1;
                    let first = &batch[0];
                    let extra = deliveries::claim_following(
                        &db,
                        target.id,
                        first.outbox_id,
                        more,
                        self.lease,
                    )
                    .await?;
                    batch.extend(extra);
                    folded = true;
                }
                w.record(now);
            }
            *self.in_flight.entry(target.id).or_default() += 1;
            let task = Batch {
                target,
                ctx: self.ctx.clone(),
                policy: self.policy,
                lease: self.lease,
                shutdown: self.shutdown.clone(),
            };
            self.tasks.spawn(task.run(batch, folded));
        }
        Ok(())
    }

    /// Starts the digests and reminders that are due (see [`schedule`]).
    async fn digests(&mut self) -> Result<(), DeliverError> {
        let d = &self.settings.deliver;
        let Some(offset) = chrono::FixedOffset::east_opt(d.digest_utc_offset_hours * 3600) else {
            return Ok(());
        };
        let now = chrono::Utc::now();
        let mut due = Vec::new();
        for (id, b) in &self.targets {
            let o = &b.target.options;
            let at = match (&o.digest_at, o.remind_days) {
                (Some(at), _) => at.as_str(),
                (None, Some(_)) => d.reminder_at.as_str(),
                (None, None) => continue,
            };
            if self.digesting.contains(id) {
                continue;
            }
            let Ok(at) = schedule::parse_local_time(at) else {
                continue;
            };
            let last = self.digest_sent.get(id).copied().flatten();
            if let Some(slot) = schedule::due(at, offset, last, b.created_at, now) {
                due.push((*id, last, slot));
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let db = self
            .pool
            .get()
            .await
            .map_err(crate::store::StoreError::from)?;
        for (id, last, slot) in due {
            let Some(b) = self.targets.get(&id) else {
                continue;
            };
            if !digests::claim(&db, id, last, self.lease).await? {
                continue;
            }
            let filters = serde_json::from_value::<Filters>(b.filters.clone()).unwrap_or_default();
            let job = DigestJob {
                pool: self.pool.clone(),
                target: b.target.clone(),
                ctx: self.ctx.clone(),
                policy: self.policy,
                lease: self.lease,
                max: d.digest_max,
                scope: b.scope.clone(),
                filters,
                from: last.unwrap_or(b.created_at),
                slot,
            };
            self.digesting.insert(id);
            self.tasks.spawn(job.run());
        }
        Ok(())
    }
}

/// A subscription's concurrency: its own or the default; 1 for robots (rate-limited and
/// folded) and digests.
fn concurrency(t: &Target, default: usize) -> i32 {
    let n = if t.channel.is_robot() || t.options.digest_at.is_some() {
        1
    } else {
        t.options.concurrency.unwrap_or(default)
    };
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// `Option<Instant>` as a "last done" stamp.
trait Stamp {
    fn is_none_or_elapsed(&self, every: Duration) -> bool;
}

impl Stamp for Option<Instant> {
    fn is_none_or_elapsed(&self, every: Duration) -> bool {
        match self {
            None => true,
            Some(t) => t.elapsed() >= every,
        }
    }
}

/// The claimed deliveries grouped by batch (subscription and key), each in outbox order;
/// the batches in the order of their first delivery.
fn batches(claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
    let mut index: HashMap<(i64, String), usize> = HashMap::new();
    let mut out: Vec<Vec<Claimed>> = Vec::new();
    for c in claimed {
        match index.get(&(c.subscription_id, c.key.clone())) {
            Some(i) => out[*i].push(c),
            None => {
                index.insert((c.subscription_id, c.key.clone()), out.len());
                out.push(vec![c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matching_applies_filters_and_bureau_scope() {
        let targets = vec![
            FanoutTarget {
                id: 1,
                filters: json!({"metals": ["Cd"], "levels": ["intervention"]}),
                counties: vec!["441781".into()],
                all_counties: false,
            },
            FanoutTarget {
                id: 2,
                filters: json!({}),
                counties: vec![],
                all_counties: true,
            },
            FanoutTarget {
                id: 3,
                filters: json!({"bogus": 1}),
                counties: vec![],
                all_counties: true,
            },
        ];
        let ev = |county: &str, level: &str| {
            json!({"county_code": county, "metal": "Cd", "level": level, "state": "opened",
                   "land_use": "paddy", "source": "station"})
        };
        assert_eq!(matching(&targets, &ev("441781", "intervention")), [1, 2]);
        assert_eq!(matching(&targets, &ev("441781", "screening")), [2]);
        assert_eq!(matching(&targets, &ev("441702", "intervention")), [2]);
    }
}
