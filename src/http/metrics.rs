//! Prometheus metrics: the recorder (installed once per process) and the metric names.
//!
//! Counters and histograms are recorded with the `metrics` facade where the events happen
//! (batch writer, publisher, lab uploads); `/metrics` renders them in the Prometheus text
//! format, after refreshing the queue-depth gauges.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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

/// Errors installing the recorder.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The exporter could not be built or installed.
    #[error("metrics: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
}

/// Installs the global Prometheus recorder and returns the handle that renders it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(COMMIT_SECONDS.to_string()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        )?
        .install_recorder()?;
    Ok(handle)
}
