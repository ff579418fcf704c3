//! Telemetry, one place per event: each event soilmon reports (a batch committed or failed, a
//! message refused, outbox rows published, a lab batch accepted or rejected…) is one function
//! here that writes its log line and updates its Prometheus metric together, in the way
//! vector's internal events work. Log fields are spelled the same everywhere: `station_id`,
//! `msg_id`, `point_id`, `batch_id`, and `batch` for the collector's batch sequence number
//! (the field of the per-batch span). Each lab upload runs in a `lab_upload` span whose
//! `batch_id` field is set once the batch is read, so its lines can be followed in the JSON log.
//!
//! The metric names are part of the operations contract (README, HTTP API): they are defined
//! here and rendered by `http::metrics`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::{debug, info, warn};

/// Station messages received, by outcome (`stored`, `duplicate`, `quarantined`).
pub const MESSAGES: &str = "soilmon_messages_total";
/// Station messages quarantined, by reason code.
pub const QUARANTINED: &str = "soilmon_quarantined_total";
/// Readings stored, by source and judgement level.
pub const READINGS: &str = "soilmon_readings_total";
/// Lab batches, by outcome (`accepted`, `replayed`, `rejected`, `conflict`).
pub const LAB_BATCHES: &str = "soilmon_lab_batches_total";
/// Alert events published to MQTT.
pub const ALERTS_PUBLISHED: &str = "soilmon_alerts_published_total";
/// Commit latency of a write transaction, seconds, by source.
pub const COMMIT_SECONDS: &str = "soilmon_commit_seconds";
/// Outbox rows not yet published.
pub const OUTBOX_PENDING: &str = "soilmon_outbox_pending";
/// Station messages the collector took from the broker and has not yet acked (or let go).
pub const INGEST_INFLIGHT: &str = "soilmon_ingest_inflight";
/// Quarantine replays, by outcome (`stored`, `already_stored`, `refused`).
pub const QUARANTINE_REPLAYS: &str = "soilmon_quarantine_replays_total";
/// The most [`INGEST_INFLIGHT`] has been since the collector started.
pub const INGEST_INFLIGHT_MAX: &str = "soilmon_ingest_inflight_max";
/// Gauge: points overdue at the last overdue check.
pub const POINTS_OVERDUE: &str = "soilmon_points_overdue";
/// Counter: network events queued by the overdue check, by `state` (overdue, overdue_cleared).
pub const NETWORK_EVENTS: &str = "soilmon_network_events_total";

/// Alert deliveries to subscriptions, by channel and outcome (`delivered`, `retry`, `dead`).
pub const DELIVERIES: &str = "soilmon_deliveries_total";
/// Pending deliveries per subscription.
pub const DELIVERY_QUEUE_DEPTH: &str = "soilmon_delivery_queue_depth";
/// Age of the oldest pending delivery per subscription, seconds.
pub const DELIVERY_QUEUE_AGE: &str = "soilmon_delivery_queue_age_seconds";
/// Histogram: seconds a refresh of the soil tier snapshot took (refreshes that found nothing
/// new are not observed).
pub const TIERS_REFRESH_SECONDS: &str = "soilmon_tiers_refresh_seconds";

/// A station batch the collector saw committed: what it did and where its time went.
#[derive(Debug, Clone, Copy)]
pub struct BatchCommitted<'a> {
    /// Messages in the batch.
    pub messages: usize,
    /// Messages stored for the first time.
    pub stored: usize,
    /// Readings inserted.
    pub readings: usize,
    /// Redelivered copies of stored messages.
    pub duplicates: usize,
    /// Alert events written to the outbox.
    pub alerts: usize,
    /// (point, metal) pairs whose incident tracks were read from the database rather than
    /// taken from the writer's memory of them.
    pub tracks_read: usize,
    /// Newly quarantined messages per reason code.
    pub rejected: &'a BTreeMap<&'static str, usize>,
    /// Readings per judgement level.
    pub levels: &'a BTreeMap<&'static str, usize>,
    /// The transaction, from its start to COMMIT.
    pub commit: Duration,
    /// Acks dropped because their connection was gone.
    pub stale_acks_dropped: usize,
    /// Age of the batch's oldest message at commit, ms.
    pub oldest_ms: i64,
    /// Connection, waiting for the batch ahead's stage, and the stage.
    pub stage: Duration,
    /// The readings COPY (after any wait for the batches ahead).
    pub copy: Duration,
    /// Waiting for the previous batch's commit.
    pub wait: Duration,
    /// Incidents, quarantine, archive and COMMIT.
    pub finish: Duration,
}

/// A station batch committed: counts its messages, refusals and readings, and its commit
/// time; logs it at debug level.
pub fn batch_committed(b: &BatchCommitted<'_>) {
    metrics::histogram!(COMMIT_SECONDS, "source" => "station").record(b.commit.as_secs_f64());
    metrics::counter!(MESSAGES, "outcome" => "received").increment(b.messages as u64);
    metrics::counter!(MESSAGES, "outcome" => "stored").increment(b.stored as u64);
    metrics::counter!(MESSAGES, "outcome" => "duplicate").increment(b.duplicates as u64);
    for (reason, n) in b.rejected {
        metrics::counter!(MESSAGES, "outcome" => "quarantined").increment(*n as u64);
        metrics::counter!(QUARANTINED, "reason" => *reason).increment(*n as u64);
    }
    for (level, n) in b.levels {
        metrics::counter!(READINGS, "source" => "station", "level" => *level).increment(*n as u64);
    }
    debug!(
        messages = b.messages,
        stored = b.stored,
        readings = b.readings,
        duplicates = b.duplicates,
        alerts = b.alerts,
        tracks_read = b.tracks_read,
        stale_acks_dropped = b.stale_acks_dropped,
        oldest_ms = b.oldest_ms,
        stage_ms = ms(b.stage),
        copy_ms = ms(b.copy),
        wait_ms = ms(b.wait),
        finish_ms = ms(b.finish),
        "batch committed"
    );
}

/// A station batch did not commit; its acks are held and it is retried after `retry_in`.
pub fn batch_failed(messages: usize, error: &dyn Display, retry_in: Duration) {
    warn!(error = %error, messages, retry_in_ms = retry_in.as_millis() as u64,
          "store: batch not committed; holding acks");
}

/// A station message was refused (it is quarantined once per content and reason, with a
/// reject reply; counted in [`batch_committed`]).
pub fn message_refused(
    topic: &str,
    station_id: Option<&str>,
    msg_id: Option<&str>,
    reason: &str,
    detail: &str,
) {
    info!(
        topic,
        station_id = station_id.unwrap_or(""),
        msg_id = msg_id.unwrap_or(""),
        reason,
        detail,
        "message refused"
    );
}

/// Outbox rows published and acknowledged by the broker: `alerts` of the `events` were
/// alert events, the rest reject replies.
pub fn outbox_published(
    events: usize,
    alerts: usize,
    select: Duration,
    publish: Duration,
    acked: Duration,
) {
    metrics::counter!(ALERTS_PUBLISHED).increment(alerts as u64);
    info!(
        events,
        alerts,
        rejects = events - alerts.min(events),
        select_ms = ms(select),
        publish_ms = ms(publish),
        acked_ms = ms(acked),
        "alerts: published"
    );
}

/// The outbox rows not yet published, as read for `/metrics`.
pub fn outbox_pending(rows: i64) {
    metrics::gauge!(OUTBOX_PENDING).set(rows as f64);
}

/// The collector's in-flight count: station messages taken from the broker and not yet
/// acked, shown as [`INGEST_INFLIGHT`] with its high-water mark [`INGEST_INFLIGHT_MAX`]. The
/// gauges are registered once, so counting a message is a few atomic operations.
pub struct Inflight {
    now: AtomicUsize,
    max: AtomicUsize,
    now_gauge: metrics::Gauge,
    max_gauge: metrics::Gauge,
}

impl Inflight {
    /// Both gauges at zero (a collector starting holds nothing).
    pub fn new() -> Inflight {
        let now_gauge = metrics::gauge!(INGEST_INFLIGHT);
        let max_gauge = metrics::gauge!(INGEST_INFLIGHT_MAX);
        now_gauge.set(0.0);
        max_gauge.set(0.0);
        Inflight {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            now_gauge,
            max_gauge,
        }
    }

    /// A message came off the connection into the collector.
    pub fn received(&self) {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.now_gauge.set(now as f64);
        if self.max.fetch_max(now, Ordering::Relaxed) < now {
            self.max_gauge.set(now as f64);
        }
    }

    /// `n` messages were acked, or let go without an ack (their connection is gone, or
    /// shutdown came first: the broker redelivers them).
    pub fn released(&self, n: usize) {
        let before = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        self.now_gauge.set(before.saturating_sub(n) as f64);
    }
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight::new()
    }
}

/// Alert events matched against the subscriptions: `deliveries` rows written for `events`.
pub fn deliveries_fanned_out(events: usize, deliveries: usize) {
    debug!(events, deliveries, "deliveries: fanned out");
}

/// One delivery attempt of `events` alert events (more than one: a folded robot summary)
/// to `subscription`: `outcome` is `delivered`, `retry` or `dead`.
pub fn delivery_attempted(
    channel: &'static str,
    subscription: &str,
    events: usize,
    attempts: i32,
    outcome: &'static str,
    error: Option<&str>,
) {
    metrics::counter!(DELIVERIES, "channel" => channel, "outcome" => outcome)
        .increment(events as u64);
    match error {
        None => debug!(channel, subscription, events, attempts, outcome, "delivery"),
        Some(error) => warn!(
            channel,
            subscription, events, attempts, outcome, error, "delivery failed"
        ),
    }
}

/// The queue of one subscription: pending deliveries and the oldest one's age.
pub fn delivery_queue(subscription: &str, depth: i64, oldest_secs: f64) {
    let name = subscription.to_string();
    metrics::gauge!(DELIVERY_QUEUE_DEPTH, "subscription" => name.clone()).set(depth as f64);
    metrics::gauge!(DELIVERY_QUEUE_AGE, "subscription" => name).set(oldest_secs);
}

/// The delivery engine could not do `what` (database unreachable…); it tries again.
pub fn delivery_engine_failed(what: &str, error: &dyn Display) {
    warn!(error = %error, "deliveries: {what} failed; retrying");
}

/// A subscription cannot be delivered to as configured (bad secrets, CA file…).
pub fn subscription_unusable(subscription: &str, error: &dyn Display) {
    warn!(subscription, error = %error, "deliveries: subscription skipped");
}

/// A lab upload refused before it was read: larger than `http.body_limit_bytes`.
pub fn lab_batch_too_large(limit: usize) {
    metrics::counter!(LAB_BATCHES, "outcome" => "too_large").increment(1);
    debug!(limit, "lab batch too large");
}

/// A lab upload whose body is no batch at all (no readable rows): refused with `errors`
/// issues.
pub fn lab_batch_unreadable(uploaded_by: &str, errors: usize) {
    metrics::counter!(LAB_BATCHES, "outcome" => "rejected").increment(1);
    info!(uploaded_by = %uploaded_by, errors, "lab batch unreadable");
}

/// Who sent a checked lab batch, and what it holds: the fields of every lab upload event.
#[derive(Debug, Clone, Copy)]
pub struct LabUpload<'a> {
    /// The batch id (empty when the batch has none).
    pub batch_id: &'a str,
    /// The lab id (empty when the batch has none).
    pub lab_id: &'a str,
    /// Rows in the batch.
    pub rows: usize,
    /// The identity that uploaded it.
    pub uploaded_by: &'a str,
}

/// A checked lab batch could not be stored (`what`: the database was unavailable, or a
/// statement failed); the caller is told to retry.
pub fn lab_upload_failed(upload: &LabUpload<'_>, what: &str, error: &dyn Display) {
    warn!(
        error = %error,
        batch_id = upload.batch_id,
        lab_id = upload.lab_id,
        rows = upload.rows,
        "lab upload: {what}"
    );
}

/// A lab batch's rows were found already stored although the batch is new: they were
/// inserted with `ON CONFLICT DO NOTHING` instead of copied.
pub fn lab_rows_already_stored(batch_id: &str, rows: usize) {
    warn!(
        batch_id,
        rows, "lab rows already stored for a new batch; inserted with ON CONFLICT DO NOTHING"
    );
}

/// An accepted lab batch's transaction, step by step (the `lab batch stored` line; the
/// benchmark reads its `copy_ms` and `readings_ms`).
#[derive(Debug, Clone, Copy)]
pub struct LabBatchStored<'a> {
    /// The batch id.
    pub batch_id: &'a str,
    /// Rows in the batch (QC included).
    pub rows: usize,
    /// Readings stored (field samples).
    pub readings: usize,
    /// The binary COPY of the rows.
    pub copy: Duration,
    /// The field samples, their readings and the crop results.
    pub readings_insert: Duration,
    /// Of which the field samples' `samples` rows.
    pub samples: Duration,
    /// Incident tracks and alert events.
    pub incidents: Duration,
    /// The report update and the readings digest.
    pub digest: Duration,
    /// The archive entry.
    pub archive: Duration,
    /// COMMIT.
    pub commit: Duration,
}

/// An accepted lab batch committed: logs where its transaction's time went.
pub fn lab_batch_stored(b: &LabBatchStored<'_>) {
    info!(
        batch_id = b.batch_id,
        rows = b.rows,
        readings = b.readings,
        copy_ms = whole_ms(b.copy),
        readings_ms = whole_ms(b.readings_insert),
        samples_ms = whole_ms(b.samples),
        incidents_ms = whole_ms(b.incidents),
        digest_ms = whole_ms(b.digest),
        archive_ms = whole_ms(b.archive),
        commit_ms = whole_ms(b.commit),
        "lab batch stored"
    );
}

/// `samples`' statistics were taken again after an accepted batch of `field_samples` field
/// samples (or that failed, which leaves the batch stored).
pub fn lab_samples_analysed(field_samples: usize, took: Duration, error: Option<&impl Display>) {
    match error {
        None => info!(
            field_samples,
            took_ms = whole_ms(took),
            "samples analysed after a large lab batch"
        ),
        Some(e) => warn!(error = %e, field_samples, "samples not analysed after a large lab batch"),
    }
}

/// A lab batch was accepted: its commit time and its readings per judgement level (logged
/// by [`lab_batch_stored`] and [`lab_batch_answered`]).
pub fn lab_batch_accepted<'a>(commit: Duration, levels: impl IntoIterator<Item = (&'a str, u64)>) {
    metrics::histogram!(COMMIT_SECONDS, "source" => "lab").record(commit.as_secs_f64());
    for (level, n) in levels {
        metrics::counter!(READINGS, "source" => "lab", "level" => level.to_string()).increment(n);
    }
}

/// How a checked lab upload was answered (the `lab batch` line; the benchmark reads its
/// `read_check_ms` and `store_ms`).
#[derive(Debug, Clone, Copy)]
pub struct LabBatchAnswered<'a> {
    /// The batch and who sent it.
    pub upload: LabUpload<'a>,
    /// `accepted`, `replayed`, `rejected` or `conflict`.
    pub outcome: &'static str,
    /// Errors in the report answered.
    pub errors: u64,
    /// Reading and checking the body.
    pub read_check: Duration,
    /// Storing it (or finding it stored).
    pub store: Duration,
    /// The whole upload.
    pub elapsed: Duration,
}

/// A checked lab upload was answered: counts its outcome and logs it.
pub fn lab_batch_answered(a: &LabBatchAnswered<'_>) {
    metrics::counter!(LAB_BATCHES, "outcome" => a.outcome).increment(1);
    info!(
        batch_id = a.upload.batch_id,
        lab_id = a.upload.lab_id,
        rows = a.upload.rows,
        uploaded_by = %a.upload.uploaded_by,
        outcome = a.outcome,
        errors = a.errors,
        read_check_ms = whole_ms(a.read_check),
        store_ms = whole_ms(a.store),
        elapsed_ms = whole_ms(a.elapsed),
        "lab batch"
    );
}

/// A duration in whole milliseconds, for the lab log fields (read by the benchmark as
/// integers).
fn whole_ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// A duration in milliseconds, for log fields.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A quarantined message replayed: counted by outcome and logged with who replayed it.
pub fn quarantine_replayed(id: i64, by: &str, outcome: &'static str, reason: Option<&str>) {
    metrics::counter!(QUARANTINE_REPLAYS, "outcome" => outcome).increment(1);
    info!(
        quarantine_id = id,
        replayed_by = by,
        outcome,
        reason = reason.unwrap_or(""),
        "quarantine entry replayed"
    );
}

/// An overdue check ran: `overdue` points are overdue now; it raised `raised` `overdue`
/// events and `cleared` `overdue_cleared` events.
pub fn overdue_checked(overdue: usize, raised: usize, cleared: usize) {
    metrics::gauge!(POINTS_OVERDUE).set(overdue as f64);
    metrics::counter!(NETWORK_EVENTS, "state" => "overdue").increment(raised as u64);
    metrics::counter!(NETWORK_EVENTS, "state" => "overdue_cleared").increment(cleared as u64);
    if raised + cleared > 0 {
        info!(
            overdue,
            raised, cleared, "network: overdue check queued events"
        );
    } else {
        tracing::debug!(overdue, "network: overdue check, nothing new");
    }
}

/// An overdue check failed (database); retried at the next tick.
pub fn overdue_check_failed(error: &dyn Display) {
    warn!(error = %error, "network: overdue check failed; retrying at the next tick");
}

/// A tick of the tier snapshot refresh: `refreshed` when samples had arrived (or the snapshot
/// had aged) and it was recomputed, in `took`.
pub fn tiers_refreshed(refreshed: bool, took: std::time::Duration) {
    if refreshed {
        metrics::histogram!(TIERS_REFRESH_SECONDS).record(took.as_secs_f64());
        tracing::debug!(took_ms = ms(took), "tier snapshot refreshed");
    }
}

/// A refresh of the tier snapshot failed (database); retried at the next tick.
pub fn tiers_refresh_failed(error: &dyn Display) {
    warn!(error = %error, "tier snapshot refresh failed; retrying at the next tick");
}
