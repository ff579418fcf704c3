//! Prometheus metrics: the recorder (installed once per process) that `/metrics` renders.
//!
//! Counters and histograms are recorded with the `metrics` facade by the events of
//! [`crate::telemetry`] (where the metric names are defined); `/metrics` renders them in the
//! Prometheus text format, after refreshing the queue-depth gauges.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::telemetry::COMMIT_SECONDS;

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
