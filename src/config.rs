//! Typed configuration: `config/default.toml` (or `--config FILE`) overlaid with
//! `SOILMON__SECTION__KEY` environment variables, checked once at load.
//!
//! Relative paths in the file are resolved against the file's directory, so the service can
//! be started from anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::metal::Metal;
use crate::domain::standard::{RotationRule, Standard, StandardError, Standards};

/// Errors loading or checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment override did not parse into the expected shape.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// A value parsed but is not acceptable.
    #[error("configuration: {key}: {detail}")]
    Invalid {
        /// Dotted key, e.g. `ingest.batch_max`.
        key: &'static str,
        /// Why it was refused.
        detail: String,
    },
    /// A standards file could not be read.
    #[error("standards: reading {path}: {source}")]
    Io {
        /// File or directory.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A standards file is inconsistent.
    #[error(transparent)]
    Standard(#[from] StandardError),
}

/// MQTT connection settings.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Collector client id (persistent session).
    pub client_id: String,
    /// Username; empty for none.
    pub username: String,
    /// Password; empty for none. From the environment only.
    pub password: String,
    /// Keep-alive interval, seconds.
    pub keep_alive_secs: u64,
    /// Topic prefix, normally `soil/v1`.
    pub topic_prefix: String,
    /// Largest packet the client accepts (must exceed the broker's limit).
    pub max_packet_bytes: usize,
    /// Reconnect back-off lower bound, ms.
    pub reconnect_min_ms: u64,
    /// Reconnect back-off upper bound, ms.
    pub reconnect_max_ms: u64,
}

impl MqttConfig {
    /// Subscription filter for station readings.
    pub fn readings_filter(&self) -> String {
        format!("{}/stations/+/readings", self.topic_prefix)
    }

    /// Topic on which a station is told about refused messages.
    pub fn rejects_topic(&self, station_id: &str) -> String {
        format!("{}/stations/{station_id}/rejects", self.topic_prefix)
    }

    /// Topic of one alert stream.
    pub fn alert_topic(&self, county: &str, point_id: &str, metal: Metal) -> String {
        format!("{}/alerts/{county}/{point_id}/{metal}", self.topic_prefix)
    }

    /// The station id in a readings topic, if the topic has that shape.
    pub fn station_of<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = topic.strip_prefix(&self.topic_prefix)?;
        let id = rest.strip_prefix("/stations/")?.strip_suffix("/readings")?;
        (!id.is_empty() && !id.contains('/')).then_some(id)
    }
}

/// Database settings.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseConfig {
    /// libpq-style connection string.
    pub url: String,
    /// Connection pool size.
    pub pool_size: usize,
    /// Retry back-off lower bound, ms.
    pub retry_min_ms: u64,
    /// Retry back-off upper bound, ms.
    pub retry_max_ms: u64,
}

/// Ingestion and validation settings.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestConfig {
    /// Largest accepted payload, bytes.
    pub max_payload_bytes: usize,
    /// Messages per batch (one transaction).
    pub batch_max: usize,
    /// Longest a message waits for its batch to fill, ms.
    pub batch_wait_ms: u64,
    /// Received-but-unacked messages the service holds at most.
    pub inflight_window: usize,
    /// Allowed clock skew into the future, seconds.
    pub future_skew_secs: i64,
    /// Earliest acceptable sample time.
    pub earliest_sample: DateTime<Utc>,
    /// Registry refresh interval, seconds.
    pub registry_refresh_secs: u64,
    /// Physical plausibility ceiling per analyte symbol, mg/kg.
    pub ceilings_mgkg: BTreeMap<String, f64>,
}

impl IngestConfig {
    /// The batching deadline.
    pub fn batch_wait(&self) -> Duration {
        Duration::from_millis(self.batch_wait_ms)
    }

    /// The plausibility ceiling of an analyte (validated present at load).
    pub fn ceiling(&self, metal: Metal) -> f64 {
        self.ceilings_mgkg
            .get(metal.symbol())
            .copied()
            .unwrap_or(f64::INFINITY)
    }
}

/// Judgement settings.
#[derive(Debug, Clone, Deserialize)]
pub struct JudgeConfig {
    /// Directory of the standards files.
    pub standards_dir: PathBuf,
    /// Consecutive non-exceeding samples that clear an incident.
    pub clear_after: u32,
    /// Rule for paddy–upland rotation land.
    pub rotation_rule: RotationRule,
}

/// Point registry settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryConfig {
    /// Allowed county codes.
    pub counties: Vec<String>,
}

/// Alert publisher settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AlertsConfig {
    /// Outbox rows per publish round.
    pub publish_batch: usize,
    /// Idle poll interval, ms.
    pub idle_poll_ms: u64,
    /// MQTT client id of the publisher.
    pub client_id: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// Default filter directive.
    pub level: String,
}

/// HTTP API settings (lab uploads, health, metrics).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Listen address, e.g. `127.0.0.1:8480`.
    pub addr: String,
    /// Largest accepted request body, bytes (413 beyond it).
    pub body_limit_bytes: usize,
    /// File of API tokens, one `sha256hex role name` per line; empty: no token is valid.
    /// Keep it outside the repository.
    pub tokens_file: PathBuf,
}

/// One concentration band of the duplicate relative-deviation limit.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct DuplicateLimit {
    /// The band applies when the pair's mean is above this value, mg/kg.
    pub above_mgkg: f64,
    /// Largest allowed relative deviation |a−b|/(a+b), percent.
    pub max_rd_pct: f64,
}

/// Lab batch checks and QC rules.
#[derive(Debug, Clone, Deserialize)]
pub struct LabConfig {
    /// Samples taken before this date are refused (`bad_timestamp`).
    pub earliest_sample: DateTime<Utc>,
    /// Duplicates (field + lab) required per field sample, as a share (0.2 = 20 %).
    pub duplicate_rate: f64,
    /// Duplicates required in any batch with samples.
    pub min_duplicates: usize,
    /// Blanks required per field sample, as a share.
    pub blank_rate: f64,
    /// Blanks required in any batch with samples.
    pub min_blanks: usize,
    /// Lowest acceptable spike recovery, percent.
    pub spike_recovery_min_pct: f64,
    /// Highest acceptable spike recovery, percent.
    pub spike_recovery_max_pct: f64,
    /// Duplicate RD limits by concentration, any order; the band with the highest
    /// `above_mgkg` below the pair's mean applies.
    pub duplicate_limits: Vec<DuplicateLimit>,
}

impl LabConfig {
    /// The duplicate RD limit (percent) for a pair whose mean is `mean_mgkg`.
    pub fn duplicate_limit(&self, mean_mgkg: f64) -> f64 {
        let mut best: Option<DuplicateLimit> = None;
        for l in &self.duplicate_limits {
            let higher = match best {
                None => true,
                Some(b) => l.above_mgkg > b.above_mgkg,
            };
            if mean_mgkg > l.above_mgkg && higher {
                best = Some(*l);
            }
        }
        best.map_or(f64::INFINITY, |b| b.max_rd_pct)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// MQTT.
    pub mqtt: MqttConfig,
    /// Database.
    pub database: DatabaseConfig,
    /// Ingestion.
    pub ingest: IngestConfig,
    /// Judgement.
    pub judge: JudgeConfig,
    /// Registry.
    pub registry: RegistryConfig,
    /// Alerts.
    pub alerts: AlertsConfig,
    /// Logging.
    pub log: LogConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// Lab batch checks.
    pub lab: LabConfig,
}

impl Settings {
    /// Loads `path` plus `SOILMON__…` environment overrides and validates the result.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let raw = config::Config::builder()
            .add_source(config::File::from(path))
            .add_source(
                config::Environment::with_prefix("SOILMON")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()?;
        let mut settings: Settings = raw.try_deserialize()?;
        if settings.judge.standards_dir.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            settings.judge.standards_dir = base.join(&settings.judge.standards_dir);
        }
        if !settings.http.tokens_file.as_os_str().is_empty()
            && settings.http.tokens_file.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            settings.http.tokens_file = base.join(&settings.http.tokens_file);
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, detail: &str| {
            Err(ConfigError::Invalid {
                key,
                detail: detail.to_string(),
            })
        };
        let i = &self.ingest;
        if i.batch_max == 0 {
            return invalid("ingest.batch_max", "must be at least 1");
        }
        if i.inflight_window < i.batch_max {
            return invalid(
                "ingest.inflight_window",
                "must be at least ingest.batch_max",
            );
        }
        if i.max_payload_bytes == 0 || i.max_payload_bytes >= self.mqtt.max_packet_bytes {
            return invalid(
                "ingest.max_payload_bytes",
                "must be positive and below mqtt.max_packet_bytes",
            );
        }
        if i.future_skew_secs < 0 {
            return invalid("ingest.future_skew_secs", "must not be negative");
        }
        for metal in Metal::ALL {
            match i.ceilings_mgkg.get(metal.symbol()) {
                Some(c) if c.is_finite() && *c > 0.0 => {}
                _ => return invalid("ingest.ceilings_mgkg", "needs a positive value per metal"),
            }
        }
        if let Some(k) = i.ceilings_mgkg.keys().find(|k| Metal::parse(k).is_none()) {
            return invalid("ingest.ceilings_mgkg", &format!("unknown metal {k:?}"));
        }
        if self.judge.clear_after == 0 {
            return invalid("judge.clear_after", "must be at least 1");
        }
        if self.database.pool_size < 2 {
            return invalid(
                "database.pool_size",
                "must be at least 2 (writer + publisher)",
            );
        }
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id == self.alerts.client_id {
            return invalid(
                "mqtt.client_id",
                "must be non-empty and differ from alerts.client_id",
            );
        }
        if self.alerts.publish_batch == 0 {
            return invalid("alerts.publish_batch", "must be at least 1");
        }
        if self.http.addr.parse::<std::net::SocketAddr>().is_err() {
            return invalid("http.addr", "must be host:port with an IP address");
        }
        if self.http.body_limit_bytes < 1024 {
            return invalid("http.body_limit_bytes", "must be at least 1024");
        }
        let l = &self.lab;
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !share(l.duplicate_rate) || !share(l.blank_rate) {
            return invalid("lab.duplicate_rate", "rates must be within 0-1");
        }
        if !(l.spike_recovery_min_pct.is_finite()
            && l.spike_recovery_max_pct.is_finite()
            && 0.0 < l.spike_recovery_min_pct
            && l.spike_recovery_min_pct < l.spike_recovery_max_pct)
        {
            return invalid(
                "lab.spike_recovery_min_pct",
                "need 0 < spike_recovery_min_pct < spike_recovery_max_pct",
            );
        }
        if l.duplicate_limits.is_empty()
            || l.duplicate_limits.iter().any(|d| {
                !(d.above_mgkg.is_finite() && d.max_rd_pct.is_finite() && d.max_rd_pct > 0.0)
            })
            || !l.duplicate_limits.iter().any(|d| d.above_mgkg <= 0.0)
        {
            return invalid(
                "lab.duplicate_limits",
                "need finite bands with positive limits, one of them covering 0 mg/kg",
            );
        }
        if self.registry.counties.is_empty() {
            return invalid("registry.counties", "must list at least one county code");
        }
        Ok(())
    }

    /// Loads and validates the standards files named by `judge.standards_dir`.
    pub fn standards(&self) -> Result<Standards, ConfigError> {
        load_standards(&self.judge.standards_dir, self.judge.rotation_rule)
    }
}

/// Loads every `*.toml` file in `dir` as a standard and builds the set.
pub fn load_standards(dir: &Path, rotation: RotationRule) -> Result<Standards, ConfigError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfigError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut list = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(io(&f))?;
        list.push(Standard::from_toml(&text, &f.display().to_string())?);
    }
    Ok(Standards::from_standards(list, rotation)?)
}
