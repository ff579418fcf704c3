//! Typed configuration: `config/default.toml` (or `--config FILE`) overlaid with
//! `SOILMON__SECTION__KEY` environment variables, checked once at load.
//!
//! Relative paths in the file are resolved against the file's directory, so the service can
//! be started from anywhere.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::crop::{CategoryRules, CropError, FoodStandard};
use crate::domain::metal::Metal;
use crate::domain::obligation::{ObligationError, Obligations};
use crate::domain::standard::{RotationRule, Standard, StandardError, Standards};

/// Errors loading or checking configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an environment override did not parse into the expected shape.
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    /// Values parsed but are not acceptable: every refused key, in check order.
    #[error("configuration: {}", Problem::join(.0))]
    Invalid(Vec<Problem>),
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
    /// A food-limit or category-rule file is refused (the message starts with its code).
    #[error("rules {path}: {source}")]
    Crop {
        /// The file.
        path: PathBuf,
        /// Why.
        source: CropError,
    },
    /// The obligations file is refused (the message starts with its reason code).
    #[error("obligations {path}: {source}")]
    Obligations {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ObligationError,
    },
}

/// One refused configuration value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `ingest.batch_max`.
    pub key: &'static str,
    /// Why it was refused.
    pub detail: String,
}

impl Problem {
    fn new(key: &'static str, detail: &str) -> Problem {
        Problem {
            key,
            detail: detail.to_string(),
        }
    }

    /// `key: detail` for each problem, separated by `; `.
    fn join(problems: &[Problem]) -> String {
        let parts: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.detail))
            .collect();
        parts.join("; ")
    }
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
    /// CA certificate (PEM) that signed the broker's certificate. Set: connect with TLS
    /// (rustls, ring provider), verifying the broker against this CA and `host`. Empty:
    /// plain TCP (local development only).
    #[serde(default)]
    pub tls_ca_file: PathBuf,
    /// The TLS client configuration built from `tls_ca_file` at load (None: plain TCP).
    #[serde(skip)]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl MqttConfig {
    /// The CA file when TLS is configured.
    pub fn tls_ca(&self) -> Option<&Path> {
        (!self.tls_ca_file.as_os_str().is_empty()).then_some(self.tls_ca_file.as_path())
    }

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

/// Broker identities managed by soilmon (`soilmon stations|bureaus|broker …`): Mosquitto's
/// files, and/or RabbitMQ's users through its management HTTP API (cluster mode).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Mosquitto `password_file` that soilmon writes; empty: not managed here.
    pub password_file: PathBuf,
    /// Mosquitto `acl_file` that soilmon writes; empty: not managed here.
    pub acl_file: PathBuf,
    /// Shell command that makes the broker re-read both files (SIGHUP), e.g.
    /// `kill -HUP $(cat /run/mosquitto/mosquitto.pid)`; empty: reload by hand.
    pub reload_command: String,
    /// Comma-separated base URLs (`http://host:port`) of the RabbitMQ nodes' management HTTP
    /// API, tried in turn; empty: RabbitMQ users are not managed here.
    pub rabbitmq_api_urls: String,
    /// RabbitMQ user (tag `administrator`) `soilmon broker sync` manages users with.
    pub rabbitmq_admin_user: String,
    /// Its password: from the environment (`SOILMON__BROKER__RABBITMQ_ADMIN_PASSWORD`), never
    /// the repository.
    pub rabbitmq_admin_password: String,
    /// The virtual host the MQTT plugin uses (`mqtt.vhost`); empty means `/`.
    pub rabbitmq_vhost: String,
}

impl BrokerConfig {
    /// Both file paths, when configured.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        (set(&self.password_file) && set(&self.acl_file))
            .then_some((self.password_file.as_path(), self.acl_file.as_path()))
    }

    /// The RabbitMQ management API base URLs, in the order they are tried (empty: RabbitMQ
    /// identities are not managed).
    pub fn rabbitmq_api_list(&self) -> Vec<&str> {
        self.rabbitmq_api_urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The MQTT plugin's virtual host (`/` when unset).
    pub fn rabbitmq_vhost(&self) -> &str {
        if self.rabbitmq_vhost.is_empty() {
            "/"
        } else {
            &self.rabbitmq_vhost
        }
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
    /// How long a batch's incidents, archive and COMMIT may take before the collector gives
    /// up on it, ms: the connection is then discarded (the COMMIT's outcome is unknown), the
    /// batch is not acked and is written again (the idempotency key absorbs it if it did
    /// commit). A failover can leave a COMMIT waiting forever on a dead node.
    #[serde(default = "default_commit_timeout_ms")]
    pub commit_timeout_ms: u64,
    /// CA certificate (PEM) of the database server's certificate. Set: connect with TLS
    /// (rustls, ring provider), verifying the server against this CA and the URL's `host`;
    /// put `sslmode=require` in the URL so a server without TLS is refused. Empty: no TLS
    /// (unix socket or a private network).
    #[serde(default)]
    pub tls_ca_file: PathBuf,
}

fn default_commit_timeout_ms() -> u64 {
    30_000
}

impl DatabaseConfig {
    /// [`DatabaseConfig::commit_timeout_ms`] as a duration.
    pub fn commit_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.commit_timeout_ms.max(1))
    }

    /// The CA file when TLS is configured.
    pub fn tls_ca(&self) -> Option<&Path> {
        (!self.tls_ca_file.as_os_str().is_empty()).then_some(self.tls_ca_file.as_path())
    }
}

/// Where station readings come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestSource {
    /// One MQTT broker (Mosquitto), a persistent session: the single-machine mode.
    #[default]
    Mqtt,
    /// A RabbitMQ quorum queue over AMQP 0-9-1 (`[amqp]`): cluster mode, N collectors.
    Amqp,
}

/// Cluster mode: RabbitMQ over AMQP 0-9-1 (`ingest.source = "amqp"`, and the alert
/// publisher then publishes to `exchange` over AMQP too).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AmqpConfig {
    /// Comma-separated `amqp://user:password@host:port/vhost` (or `amqps://`, with
    /// `tls_ca_file`) URLs of the cluster's nodes, tried in turn (credentials inside: set it
    /// from the environment, `SOILMON__AMQP__URLS`).
    pub urls: String,
    /// The quorum queue of station readings the collectors consume.
    pub queue: String,
    /// The topic exchange RabbitMQ's MQTT plugin publishes to (`mqtt.exchange`).
    pub exchange: String,
    /// Dead-letter exchange of the readings queue.
    pub dead_letter_exchange: String,
    /// Quorum queue bound to the dead-letter exchange (`#`).
    pub dead_letter_queue: String,
    /// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`).
    pub delivery_limit: u32,
    /// Unacknowledged deliveries the broker sends one collector at most (`basic.qos`,
    /// split evenly across the shard queues).
    pub prefetch: u16,
    /// 0: one readings queue (`queue`), consumed by every collector at once (no order across
    /// collectors). K ≥ 1: K shard queues `{queue}.0` … `{queue}.{K-1}`, fed by station
    /// through a consistent-hash exchange `{queue}.hash`, each with one active consumer, so
    /// every station's messages are committed in the order the broker received them
    /// (docs/cluster.md, "Order and incidents").
    pub shards: u16,
    /// CA certificate (PEM) that signed the nodes' certificates. Set: every URL must be
    /// `amqps://` and each node is verified against this CA only (not the system's roots)
    /// and the URL's host; a plain `amqp://` URL is refused at load. Also the CA of
    /// `https://` management API URLs (`broker.rabbitmq_api_urls`).
    pub tls_ca_file: PathBuf,
    /// Client certificate chain (PEM) presented to the nodes, with `tls_key_file`; empty:
    /// none (optional: RabbitMQ asks for one only with `ssl_options.verify = verify_peer`).
    pub tls_cert_file: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: PathBuf,
    /// The TLS client configuration built from the files above at load (None: no TLS).
    #[serde(skip)]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            urls: String::new(),
            queue: "soilmon.readings".into(),
            exchange: "amq.topic".into(),
            dead_letter_exchange: "soilmon.dlx".into(),
            dead_letter_queue: "soilmon.readings.dead".into(),
            delivery_limit: 5,
            prefetch: 1000,
            shards: 0,
            tls_ca_file: PathBuf::new(),
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
            tls: None,
        }
    }
}

impl AmqpConfig {
    /// The node URLs, in the order they are tried.
    pub fn url_list(&self) -> Vec<&str> {
        self.urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The readings queues the collectors consume: `queue`, or its `shards` shard queues.
    pub fn readings_queues(&self) -> Vec<String> {
        if self.shards == 0 {
            return vec![self.queue.clone()];
        }
        (0..self.shards)
            .map(|k| format!("{}.{k}", self.queue))
            .collect()
    }

    /// The consistent-hash exchange that shards the readings by station (`shards` ≥ 1).
    pub fn hash_exchange(&self) -> String {
        format!("{}.hash", self.queue)
    }

    /// The CA file when AMQPS is configured.
    pub fn tls_ca(&self) -> Option<&Path> {
        (!self.tls_ca_file.as_os_str().is_empty()).then_some(self.tls_ca_file.as_path())
    }

    /// The client certificate and key files, when both are set.
    pub fn tls_identity(&self) -> Option<(&Path, &Path)> {
        let (c, k) = (&self.tls_cert_file, &self.tls_key_file);
        (!c.as_os_str().is_empty() && !k.as_os_str().is_empty())
            .then_some((c.as_path(), k.as_path()))
    }

    /// The TLS client configuration of the files set (None without `tls_ca_file`); Err names
    /// the key of the file that could not be used.
    pub fn build_tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, Problem> {
        let Some(ca) = self.tls_ca() else {
            return Ok(None);
        };
        let roots = root_store(ca).map_err(|d| Problem::new("amqp.tls_ca_file", &d))?;
        let identity = match self.tls_identity() {
            Some((cert, key)) => Some(client_identity(cert, key).map_err(|(k, d)| {
                Problem::new(
                    if k {
                        "amqp.tls_key_file"
                    } else {
                        "amqp.tls_cert_file"
                    },
                    &d,
                )
            })?),
            None => None,
        };
        tls_config(roots, identity)
            .map(Some)
            .map_err(|d| Problem::new("amqp.tls_cert_file", &d))
    }
}

/// Ingestion and validation settings.
#[derive(Debug, Clone, Deserialize)]
pub struct IngestConfig {
    /// Where readings come from: `mqtt` (default) or `amqp`.
    #[serde(default)]
    pub source: IngestSource,
    /// Largest accepted payload, bytes.
    pub max_payload_bytes: usize,
    /// Most messages per batch (one transaction).
    pub batch_max: usize,
    /// How long an idle writer lingers for more messages after the first, ms (0: none).
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
    /// How long an idle writer lingers for more messages.
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

/// The crop rules: food limits and farmland category rules, loaded together.
#[derive(Debug, Clone)]
pub struct CropRules {
    /// GB 2762 limits.
    pub food: FoodStandard,
    /// Soil tier x crop state table.
    pub categories: CategoryRules,
}

/// Network management (monitoring obligations, overdue check, farmland categories).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// The monitoring obligations file (programs, intervals, metals).
    pub obligations_file: PathBuf,
    /// How often `soilmon run` checks for overdue points, seconds (at least 1).
    pub overdue_check_secs: u64,
    /// The food contaminant limits crop samples are judged against (GB 2762).
    pub food_standard_file: PathBuf,
    /// The farmland category rules (soil tier x crop state).
    pub category_rules_file: PathBuf,
}

impl Default for NetworkConfig {
    fn default() -> NetworkConfig {
        NetworkConfig {
            obligations_file: PathBuf::from("obligations/yangjiang.toml"),
            overdue_check_secs: 60,
            food_standard_file: PathBuf::from("standards/gb2762-2022.toml"),
            category_rules_file: PathBuf::from("categories/farmland-guideline.toml"),
        }
    }
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

/// Alert delivery to subscriptions (webhooks, robots): the engine of `crate::deliver`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DeliverConfig {
    /// Run the delivery engine in `soilmon run`.
    pub enabled: bool,
    /// How often the engine looks for new events and due deliveries, ms.
    pub poll_ms: u64,
    /// Sending tasks at once across subscriptions; each sends one claimed batch, one
    /// request at a time (a subscription has as many as its concurrency).
    pub workers: usize,
    /// Most deliveries of one subscription (or one incident key) claimed at once and sent
    /// one after the other by one task (robots: 1).
    pub claim_batch: i32,
    /// Database connections of the engine: its own pool, so deliveries never take a
    /// connection from the ingest path.
    pub pool_size: usize,
    /// How long a claimed delivery stays leased to the instance sending it, seconds; after
    /// that (the instance died) it is sent again. Must exceed every request timeout.
    pub lease_secs: u64,
    /// Default request timeout, ms (a subscription may set its own, below the lease).
    pub timeout_ms: u64,
    /// Attempts after which a delivery is dead-lettered.
    pub max_attempts: i32,
    /// Age after which a failing delivery is dead-lettered, seconds.
    pub max_age_secs: u64,
    /// Back-off after the first failure, ms (doubling, with jitter).
    pub backoff_min_ms: u64,
    /// Longest back-off, ms.
    pub backoff_max_ms: u64,
    /// Longest `Retry-After` honoured, seconds.
    pub retry_after_max_secs: u64,
    /// Outbox events matched against the subscriptions per fan-out round.
    pub fanout_batch: i64,
    /// Messages a minute per robot (DingTalk and WeCom: 20); past it, pending alerts are
    /// folded into one summary. 0: no limit.
    pub robot_per_minute: usize,
    /// Most alerts folded into one summary message.
    pub fold_max: i64,
    /// How often subscriptions and secrets are re-read, seconds.
    pub refresh_secs: u64,
    /// Subscription secrets (webhook keys, robot URLs and secrets): a file OUTSIDE the
    /// repository, mode 0600, written by `soilmon subscriptions add`.
    pub secrets_file: PathBuf,
    /// The console's base URL; set: robot messages link to `{base}/incidents/{id}`.
    pub console_base_url: String,
    /// County code → Chinese name, shown in messages.
    pub county_names: BTreeMap<String, String>,
    /// Deliveries a subscription may have in flight at once, each on its own incident key
    /// (point × metal), unless it sets its own; 1: strictly in order per subscription.
    pub per_subscription: usize,
    /// UTC offset of digest and reminder times, hours (8: Asia/Shanghai, no DST).
    pub digest_utc_offset_hours: i32,
    /// Local time (HH:MM) of the daily reminder of a subscription without a digest.
    pub reminder_at: String,
    /// Most state changes (deliveries) one digest carries; the rest go in the next.
    pub digest_max: i64,
}

impl Default for DeliverConfig {
    fn default() -> DeliverConfig {
        DeliverConfig {
            enabled: true,
            poll_ms: 100,
            workers: 64,
            claim_batch: 100,
            pool_size: 2,
            lease_secs: 60,
            timeout_ms: 10_000,
            max_attempts: 12,
            max_age_secs: 86_400,
            backoff_min_ms: 1_000,
            backoff_max_ms: 300_000,
            retry_after_max_secs: 3_600,
            fanout_batch: 500,
            robot_per_minute: 20,
            fold_max: 50,
            refresh_secs: 2,
            secrets_file: PathBuf::new(),
            console_base_url: String::new(),
            county_names: BTreeMap::new(),
            per_subscription: 1,
            digest_utc_offset_hours: 8,
            reminder_at: "09:00".into(),
            digest_max: 500,
        }
    }
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

/// HTTP API settings (lab uploads, bureau and admin reads, health, metrics).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    /// Listen address, e.g. `127.0.0.1:8480`.
    pub addr: String,
    /// Largest accepted request body, bytes (413 beyond it).
    pub body_limit_bytes: usize,
    /// File of API tokens, one `sha256hex role name [counties]` per line (managed with
    /// `soilmon tokens`); empty: no token is valid. Keep it outside the repository.
    pub tokens_file: PathBuf,
    /// Longest time one request may take, seconds (408 beyond it).
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Requests per minute per identity (token bucket, burst of the same size; 429 beyond
    /// it); 0 turns the limit off.
    #[serde(default = "default_rate_limit_per_minute")]
    pub rate_limit_per_minute: u32,
}

fn default_request_timeout_secs() -> u64 {
    120
}

fn default_rate_limit_per_minute() -> u32 {
    600
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
    /// Broker identity files.
    #[serde(default)]
    pub broker: BrokerConfig,
    /// Network management.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Alert delivery to subscriptions.
    #[serde(default)]
    pub deliver: DeliverConfig,
    /// RabbitMQ (cluster mode).
    #[serde(default)]
    pub amqp: AmqpConfig,
    /// The web console and the public disclosure page.
    #[serde(default)]
    pub console: ConsoleConfig,
}

/// The web console (`/console`) and the public disclosure page (`/public`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConsoleConfig {
    /// Directory of the browser libraries installed by `deploy/local/assets.sh`
    /// (`web/node_modules`); relative paths are resolved against the config file.
    pub assets_dir: PathBuf,
    /// Basemap tile URL template (`https://…/{z}/{x}/{y}.png`); empty: no basemap, the map
    /// shows the points over the county outlines only (works offline).
    pub tiles_url: String,
    /// Attribution shown with the tiles.
    pub tiles_attribution: String,
    /// How long a console session lasts, hours.
    pub session_hours: u32,
    /// Mark the session cookie `Secure` (set it when the console is served over TLS, e.g.
    /// behind a TLS-terminating proxy).
    pub secure_cookie: bool,
    /// Language of a visitor who has not chosen one: `zh-CN` or `en`.
    pub default_lang: String,
    /// How often `soilmon run` refreshes the soil tier snapshot the map, the point pages and
    /// the public page read, seconds (1-3600); it recomputes only when samples arrived.
    pub tiers_refresh_secs: u64,
    /// Recompute the tier snapshot at least this often even when no new sample key was seen,
    /// seconds (at least `tiers_refresh_secs`).
    pub tiers_max_age_secs: u64,
    /// What the public disclosure page shows.
    pub public: PublicConfig,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            assets_dir: PathBuf::from("../web/node_modules"),
            tiles_url: String::new(),
            tiles_attribution: String::new(),
            session_hours: 8,
            secure_cookie: false,
            default_lang: "zh-CN".into(),
            tiers_refresh_secs: 30,
            tiers_max_age_secs: 600,
            public: PublicConfig::default(),
        }
    }
}

/// What the public disclosure page (and its downloads) make public.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PublicConfig {
    /// Point types listed (`basic`, `risk`, `background`).
    pub point_types: Vec<String>,
    /// Whether the latest value per metal is shown (else only the tier).
    pub show_values: bool,
    /// Decimal places of the published coordinates (0–6; 2 ≈ 1 km).
    pub coordinate_decimals: u32,
    /// Whether the key supervised enterprises are listed with their latest self-monitoring
    /// campaign and whether it exceeded (action plan §28), with a CSV / xlsx download.
    pub enterprises: bool,
}

impl Default for PublicConfig {
    fn default() -> Self {
        PublicConfig {
            point_types: vec!["basic".into(), "background".into()],
            show_values: false,
            coordinate_decimals: 2,
            enterprises: true,
        }
    }
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
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut settings.judge.standards_dir,
            &mut settings.mqtt.tls_ca_file,
            &mut settings.amqp.tls_ca_file,
            &mut settings.amqp.tls_cert_file,
            &mut settings.amqp.tls_key_file,
            &mut settings.database.tls_ca_file,
            &mut settings.broker.password_file,
            &mut settings.broker.acl_file,
            &mut settings.deliver.secrets_file,
            &mut settings.console.assets_dir,
            &mut settings.network.obligations_file,
            &mut settings.network.food_standard_file,
            &mut settings.network.category_rules_file,
        ] {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
        if !settings.http.tokens_file.as_os_str().is_empty()
            && settings.http.tokens_file.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            settings.http.tokens_file = base.join(&settings.http.tokens_file);
        }
        settings.validate()?;
        if let Some(ca) = settings.mqtt.tls_ca() {
            let tls = tls_client_config(ca).map_err(|detail| {
                ConfigError::Invalid(vec![Problem::new("mqtt.tls_ca_file", &detail)])
            })?;
            settings.mqtt.tls = Some(tls);
        }
        settings.amqp.tls = settings
            .amqp
            .build_tls()
            .map_err(|p| ConfigError::Invalid(vec![p]))?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.check_ingest(&mut problems);
        self.check_services(&mut problems);
        self.check_lab(&mut problems);
        self.check_access(&mut problems);
        self.check_deliver(&mut problems);
        self.check_amqp(&mut problems);
        self.check_amqp_tls(&mut problems);
        self.check_console(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The `console.*` rules.
    fn check_console(&self, problems: &mut Vec<Problem>) {
        let c = &self.console;
        if !matches!(c.default_lang.as_str(), "zh-CN" | "en") {
            problems.push(Problem::new("console.default_lang", "must be zh-CN or en"));
        }
        if c.session_hours == 0 || c.session_hours > 24 * 30 {
            problems.push(Problem::new("console.session_hours", "must be 1-720"));
        }
        if c.tiers_refresh_secs == 0 || c.tiers_refresh_secs > 3600 {
            problems.push(Problem::new("console.tiers_refresh_secs", "must be 1-3600"));
        }
        if c.tiers_max_age_secs < c.tiers_refresh_secs {
            problems.push(Problem::new(
                "console.tiers_max_age_secs",
                "must be at least console.tiers_refresh_secs",
            ));
        }
        if c.public.coordinate_decimals > 6 {
            problems.push(Problem::new(
                "console.public.coordinate_decimals",
                "must be 0-6",
            ));
        }
        for t in &c.public.point_types {
            if crate::domain::point::PointType::parse(t).is_none() {
                problems.push(Problem::new(
                    "console.public.point_types",
                    &format!("unknown point type {t:?}"),
                ));
            }
        }
    }

    /// The `ingest.*` rules.
    fn check_ingest(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let i = &self.ingest;
        if i.batch_max == 0 {
            invalid("ingest.batch_max", "must be at least 1");
        }
        if i.inflight_window < i.batch_max {
            invalid(
                "ingest.inflight_window",
                "must be at least ingest.batch_max",
            );
        }
        if i.max_payload_bytes == 0 || i.max_payload_bytes >= self.mqtt.max_packet_bytes {
            invalid(
                "ingest.max_payload_bytes",
                "must be positive and below mqtt.max_packet_bytes",
            );
        }
        if i.future_skew_secs < 0 {
            invalid("ingest.future_skew_secs", "must not be negative");
        }
        let ceiling_ok = |m: Metal| {
            i.ceilings_mgkg
                .get(m.symbol())
                .is_some_and(|c| c.is_finite() && *c > 0.0)
        };
        if !Metal::ALL.into_iter().all(ceiling_ok) {
            invalid("ingest.ceilings_mgkg", "needs a positive value per metal");
        }
        if let Some(k) = i.ceilings_mgkg.keys().find(|k| Metal::parse(k).is_none()) {
            invalid("ingest.ceilings_mgkg", &format!("unknown metal {k:?}"));
        }
    }

    /// The rules for the judge, database, MQTT, alerts and HTTP sections.
    fn check_services(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        if self.network.overdue_check_secs == 0 {
            invalid("network.overdue_check_secs", "must be at least 1");
        }
        if self.judge.clear_after == 0 {
            invalid("judge.clear_after", "must be at least 1");
        }
        if self.database.pool_size < 4 {
            invalid(
                "database.pool_size",
                "must be at least 4 (three writer lanes + publisher)",
            );
        }
        if self.mqtt.client_id.is_empty() || self.mqtt.client_id == self.alerts.client_id {
            invalid(
                "mqtt.client_id",
                "must be non-empty and differ from alerts.client_id",
            );
        }
        if self.alerts.publish_batch == 0 {
            invalid("alerts.publish_batch", "must be at least 1");
        }
        if self.http.addr.parse::<std::net::SocketAddr>().is_err() {
            invalid("http.addr", "must be host:port with an IP address");
        }
        if self.http.body_limit_bytes < 1024 {
            invalid("http.body_limit_bytes", "must be at least 1024");
        }
        if !(1..=3600).contains(&self.http.request_timeout_secs) {
            invalid("http.request_timeout_secs", "must be within 1-3600");
        }
    }

    /// The broker files, the MQTT CA file and the registry's counties.
    fn check_access(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let b = &self.broker;
        if b.password_file.as_os_str().is_empty() != b.acl_file.as_os_str().is_empty() {
            invalid(
                "broker.acl_file",
                "broker.password_file and broker.acl_file are set together or not at all",
            );
        }
        for u in b.rabbitmq_api_list() {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                invalid(
                    "broker.rabbitmq_api_urls",
                    &format!("{u:?} is not an http:// or https:// URL"),
                );
            }
        }
        if !b.rabbitmq_api_list().is_empty() && b.rabbitmq_admin_user.is_empty() {
            invalid(
                "broker.rabbitmq_admin_user",
                "must be set when broker.rabbitmq_api_urls is",
            );
        }
        if let Some(ca) = self.mqtt.tls_ca() {
            if !ca.is_file() {
                invalid(
                    "mqtt.tls_ca_file",
                    &format!("{} is not a file", ca.display()),
                );
            }
        }
        if self.registry.counties.is_empty() {
            invalid("registry.counties", "must list at least one county code");
        }
    }

    /// The `deliver.*` rules.
    fn check_deliver(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let d = &self.deliver;
        if d.poll_ms == 0
            || d.workers == 0
            || d.pool_size == 0
            || d.fanout_batch < 1
            || d.claim_batch < 1
            || d.fold_max < 2
        {
            invalid(
                "deliver.workers",
                "poll_ms, workers, pool_size, fanout_batch and claim_batch must be at least 1, \
                 fold_max at least 2",
            );
        }
        if d.timeout_ms == 0 || d.timeout_ms >= d.lease_secs.saturating_mul(1000) {
            invalid(
                "deliver.lease_secs",
                "must exceed deliver.timeout_ms (a lease outlives every request)",
            );
        }
        if d.max_attempts < 1 || d.max_age_secs == 0 {
            invalid(
                "deliver.max_attempts",
                "max_attempts and max_age_secs must be at least 1",
            );
        }
        if d.backoff_min_ms == 0 || d.backoff_min_ms > d.backoff_max_ms {
            invalid(
                "deliver.backoff_min_ms",
                "need 0 < backoff_min_ms <= backoff_max_ms",
            );
        }
        if d.per_subscription == 0 || d.digest_max < 1 {
            invalid(
                "deliver.per_subscription",
                "per_subscription and digest_max must be at least 1",
            );
        }
        if !(-12..=14).contains(&d.digest_utc_offset_hours)
            || chrono::NaiveTime::parse_from_str(&d.reminder_at, "%H:%M").is_err()
        {
            invalid(
                "deliver.reminder_at",
                "reminder_at must be HH:MM and digest_utc_offset_hours within -12..=14",
            );
        }
    }

    /// The `amqp.*` rules, when cluster mode is on.
    fn check_amqp(&self, problems: &mut Vec<Problem>) {
        if self.ingest.source != IngestSource::Amqp {
            return;
        }
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let a = &self.amqp;
        let urls = a.url_list();
        if urls.is_empty() {
            invalid(
                "amqp.urls",
                "ingest.source = \"amqp\" needs at least one URL",
            );
        }
        if let Some(u) = urls
            .iter()
            .find(|u| u.parse::<lapin::uri::AMQPUri>().is_err())
        {
            let shown = u.split('@').next_back().unwrap_or_default();
            invalid(
                "amqp.urls",
                &format!("not an amqp:// or amqps:// URL (…@{shown})"),
            );
        }
        for (key, name) in [
            ("amqp.queue", &a.queue),
            ("amqp.exchange", &a.exchange),
            ("amqp.dead_letter_exchange", &a.dead_letter_exchange),
            ("amqp.dead_letter_queue", &a.dead_letter_queue),
        ] {
            if name.is_empty() || name.len() > 255 {
                invalid(key, "must be 1-255 bytes");
            }
        }
        if a.delivery_limit == 0 || a.delivery_limit > i32::MAX as u32 {
            invalid("amqp.delivery_limit", "must be at least 1");
        }
        if a.prefetch == 0 {
            invalid("amqp.prefetch", "must be 1-65535");
        }
        if a.shards > 64 || a.prefetch < a.shards {
            invalid("amqp.shards", "must be 0-64 and at most amqp.prefetch");
        }
    }

    /// The `amqp.tls_*` rules, whatever `ingest.source` is (`soilmon broker …` uses them
    /// too): `amqps://` needs the CA file, and with it every URL must be `amqps://`, so a
    /// node is never reached in plain text; the client certificate and key come together.
    fn check_amqp_tls(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let a = &self.amqp;
        let urls = a.url_list();
        // Scheme only: the rest of a URL holds the password.
        let scheme = |u: &str| {
            u.split("://")
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase()
        };
        match a.tls_ca() {
            Some(ca) => {
                if !ca.is_file() {
                    invalid(
                        "amqp.tls_ca_file",
                        &format!("{} is not a readable file", ca.display()),
                    );
                }
                if let Some(i) = urls.iter().position(|u| scheme(u) != "amqps") {
                    invalid(
                        "amqp.urls",
                        &format!(
                            "node {i} is not an amqps:// URL while amqp.tls_ca_file is set: \
                             soilmon never talks to a node in plain text once TLS is configured"
                        ),
                    );
                }
            }
            None => {
                if let Some(i) = urls.iter().position(|u| scheme(u) == "amqps") {
                    invalid(
                        "amqp.tls_ca_file",
                        &format!(
                            "node {i} is an amqps:// URL: set amqp.tls_ca_file to the CA (PEM) \
                             of the nodes' certificates"
                        ),
                    );
                }
            }
        }
        let (cert, key) = (&a.tls_cert_file, &a.tls_key_file);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            invalid(
                "amqp.tls_cert_file",
                "amqp.tls_cert_file and amqp.tls_key_file are set together or not at all",
            );
        } else if a.tls_identity().is_some() && a.tls_ca().is_none() {
            invalid(
                "amqp.tls_cert_file",
                "a client certificate needs amqp.tls_ca_file (TLS) too",
            );
        }
        for (k, p) in [("amqp.tls_cert_file", cert), ("amqp.tls_key_file", key)] {
            if !p.as_os_str().is_empty() && !p.is_file() {
                invalid(k, &format!("{} is not a readable file", p.display()));
            }
        }
    }

    /// The `lab.*` rules.
    fn check_lab(&self, problems: &mut Vec<Problem>) {
        let mut invalid = |key, detail: &str| problems.push(Problem::new(key, detail));
        let l = &self.lab;
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if !share(l.duplicate_rate) {
            invalid("lab.duplicate_rate", "rates must be within 0-1");
        }
        if !share(l.blank_rate) {
            invalid("lab.blank_rate", "rates must be within 0-1");
        }
        if !(l.spike_recovery_min_pct.is_finite()
            && l.spike_recovery_max_pct.is_finite()
            && 0.0 < l.spike_recovery_min_pct
            && l.spike_recovery_min_pct < l.spike_recovery_max_pct)
        {
            invalid(
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
            invalid(
                "lab.duplicate_limits",
                "need finite bands with positive limits, one of them covering 0 mg/kg",
            );
        }
    }

    /// Loads and validates the standards files named by `judge.standards_dir`.
    pub fn standards(&self) -> Result<Standards, ConfigError> {
        load_standards(&self.judge.standards_dir, self.judge.rotation_rule)
    }

    /// Loads and validates the monitoring obligations file (`network.obligations_file`).
    pub fn obligations(&self) -> Result<Obligations, ConfigError> {
        let path = &self.network.obligations_file;
        let refused = |source| ConfigError::Obligations {
            path: path.clone(),
            source,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| refused(ObligationError::Unreadable(e.to_string())))?;
        Obligations::from_toml(&text, &self.registry.counties).map_err(refused)
    }

    /// Loads and validates the food limits and the farmland category rules
    /// (`network.food_standard_file`, `network.category_rules_file`).
    pub fn crop_rules(&self) -> Result<CropRules, ConfigError> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                path: path.clone(),
                source,
            })
        };
        let refused = |path: &PathBuf| {
            let path = path.clone();
            move |source| ConfigError::Crop { path, source }
        };
        let n = &self.network;
        let food = FoodStandard::from_toml(&read(&n.food_standard_file)?)
            .map_err(refused(&n.food_standard_file))?;
        let categories = CategoryRules::from_toml(&read(&n.category_rules_file)?)
            .map_err(refused(&n.category_rules_file))?;
        Ok(CropRules { food, categories })
    }
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) trusting only the CA
/// certificates in the PEM file `ca`. The broker's certificate must name the configured
/// `mqtt.host` (DNS name or IP address).
pub fn tls_client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    tls_config(root_store(ca)?, None)
}

/// A client certificate chain and its private key.
type ClientIdentity = (
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
);

/// The CA certificates of the PEM file `ca` (Err when it is unreadable or holds none).
fn root_store(ca: &Path) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(ca).map_err(|e| format!("reading {}: {e}", ca.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("parsing {}: {e}", ca.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA certificate in {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("no certificate in {}", ca.display()));
    }
    Ok(roots)
}

/// The certificate chain of the PEM file `cert` and the private key of the PEM file `key`;
/// Err((true, …)) when the key is at fault, Err((false, …)) when the certificate is.
fn client_identity(cert: &Path, key: &Path) -> Result<ClientIdentity, (bool, String)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| (false, format!("reading {}: {e}", cert.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (false, format!("parsing {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err((false, format!("no certificate in {}", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            true,
            format!("no usable private key in {}: {e}", key.display()),
        )
    })?;
    Ok((chain, key))
}

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) trusting `roots` only,
/// presenting `identity` when the server asks for a client certificate.
fn tls_config(
    roots: rustls::RootCertStore,
    identity: Option<ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate and key: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Loads every `*.toml` file in `dir` as a soil standard (food-limit files, which have a
/// `[food_standard]` table, are skipped) and builds the set.
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
        // Food limits (GB 2762) share the directory; they are loaded by `crop_rules`.
        if FoodStandard::is_food_standard(&text) {
            continue;
        }
        list.push(Standard::from_toml(&text, &f.display().to_string())?);
    }
    Ok(Standards::from_standards(list, rotation)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/default.toml` without environment overrides.
    fn defaults() -> Settings {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
        config::Config::builder()
            .add_source(config::File::from(path))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap()
    }

    fn refused_keys(s: &Settings) -> Vec<&'static str> {
        match s.validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(|p| p.key).collect(),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn the_default_file_is_valid() {
        assert_eq!(refused_keys(&defaults()), Vec::<&str>::new());
    }

    #[test]
    fn every_bad_key_is_reported_at_once() {
        let mut s = defaults();
        s.ingest.batch_max = 0;
        s.judge.clear_after = 0;
        s.database.pool_size = 1;
        s.http.addr = "not an address".into();
        s.lab.blank_rate = 1.5;
        s.registry.counties.clear();
        assert_eq!(
            refused_keys(&s),
            [
                "ingest.batch_max",
                "judge.clear_after",
                "database.pool_size",
                "http.addr",
                "lab.blank_rate",
                "registry.counties",
            ]
        );
        let text = s.validate().unwrap_err().to_string();
        assert!(
            text.starts_with("configuration: ingest.batch_max: must be at least 1; "),
            "{text}"
        );
        assert!(
            text.contains("; lab.blank_rate: rates must be within 0-1; "),
            "{text}"
        );
    }

    #[test]
    fn each_rule_names_its_own_key() {
        type Break = fn(&mut Settings);
        let cases: [(&str, Break); 21] = [
            ("deliver.workers", |s| s.deliver.workers = 0),
            ("deliver.lease_secs", |s| s.deliver.lease_secs = 1),
            ("deliver.max_attempts", |s| s.deliver.max_attempts = 0),
            ("deliver.backoff_min_ms", |s| s.deliver.backoff_min_ms = 0),
            ("ingest.batch_max", |s| s.ingest.batch_max = 0),
            ("ingest.inflight_window", |s| {
                s.ingest.inflight_window = s.ingest.batch_max - 1
            }),
            ("ingest.max_payload_bytes", |s| {
                s.ingest.max_payload_bytes = 0
            }),
            ("ingest.future_skew_secs", |s| {
                s.ingest.future_skew_secs = -1
            }),
            ("ingest.ceilings_mgkg", |s| {
                s.ingest.ceilings_mgkg.insert("Pb".into(), f64::NAN);
            }),
            ("judge.clear_after", |s| s.judge.clear_after = 0),
            ("database.pool_size", |s| s.database.pool_size = 3),
            ("mqtt.client_id", |s| {
                s.mqtt.client_id = s.alerts.client_id.clone()
            }),
            ("alerts.publish_batch", |s| s.alerts.publish_batch = 0),
            ("http.addr", |s| s.http.addr = "localhost".into()),
            ("http.body_limit_bytes", |s| s.http.body_limit_bytes = 10),
            ("http.request_timeout_secs", |s| {
                s.http.request_timeout_secs = 0
            }),
            ("broker.acl_file", |s| {
                s.broker.password_file = "p".into();
                s.broker.acl_file = PathBuf::new();
            }),
            ("registry.counties", |s| s.registry.counties.clear()),
            ("lab.duplicate_rate", |s| s.lab.duplicate_rate = -0.1),
            ("lab.blank_rate", |s| s.lab.blank_rate = f64::INFINITY),
            ("lab.spike_recovery_min_pct", |s| {
                s.lab.spike_recovery_min_pct = s.lab.spike_recovery_max_pct
            }),
        ];
        for (key, break_it) in cases {
            let mut s = defaults();
            break_it(&mut s);
            assert_eq!(refused_keys(&s), [key], "breaking {key}");
        }
        let mut s = defaults();
        s.lab.duplicate_limits.retain(|d| d.above_mgkg > 0.0);
        assert_eq!(refused_keys(&s), ["lab.duplicate_limits"]);
        let mut s = defaults();
        s.ingest.ceilings_mgkg.insert("Xx".into(), 1.0);
        assert_eq!(refused_keys(&s), ["ingest.ceilings_mgkg"]);
    }

    /// Runs the `openssl` CLI in `dir` (as the TLS integration tests do).
    fn openssl(dir: &Path, args: &str) {
        let out = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args}: {out:?}");
    }

    /// A throwaway CA (`ca.crt`) and a client certificate and key signed by it.
    fn test_pki(dir: &Path) {
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            dir,
            &format!("req -x509 {ec} -keyout ca.key -out ca.crt -days 1 -subj /CN=ca"),
        );
        openssl(
            dir,
            &format!("req {ec} -keyout client.key -out client.csr -subj /CN=client"),
        );
        // An extension file makes it X.509 v3 (rustls refuses v1 certificates).
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
        openssl(
            dir,
            "x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
             -out client.crt -days 1 -extfile client.ext",
        );
    }

    fn cluster_mode(urls: &str) -> Settings {
        let mut s = defaults();
        s.ingest.source = IngestSource::Amqp;
        s.amqp.urls = urls.into();
        s
    }

    #[test]
    fn amqps_needs_a_ca_file_and_a_ca_file_refuses_plain_urls() {
        let dir = tempfile::tempdir().unwrap();
        test_pki(dir.path());
        let ca = dir.path().join("ca.crt");
        let plain = "amqp://u:p@127.0.0.1:5672/%2F";
        let tls = "amqps://u:p@127.0.0.1:5671/%2F";

        assert_eq!(refused_keys(&cluster_mode(plain)), Vec::<&str>::new());
        let s = cluster_mode(&format!("{plain},{tls}"));
        assert_eq!(refused_keys(&s), ["amqp.tls_ca_file"]);
        let text = s.validate().unwrap_err().to_string();
        assert!(text.contains("node 1 is an amqps:// URL"), "{text}");
        assert!(!text.contains("u:p"), "the password is never shown: {text}");

        // With the CA, a single plain node among TLS ones is refused: no plain-text path.
        let mut s = cluster_mode(&format!("{tls},{plain}"));
        s.amqp.tls_ca_file = ca.clone();
        assert_eq!(refused_keys(&s), ["amqp.urls"]);
        let text = s.validate().unwrap_err().to_string();
        assert!(text.contains("node 1 is not an amqps:// URL"), "{text}");
        s.amqp.urls = tls.into();
        assert_eq!(refused_keys(&s), Vec::<&str>::new());
        assert!(s.amqp.build_tls().unwrap().is_some());
        // Not in cluster mode (e.g. `soilmon broker setup` with another source) alike.
        s.ingest.source = IngestSource::Mqtt;
        s.amqp.urls = plain.into();
        assert_eq!(refused_keys(&s), ["amqp.urls"]);
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_at_load_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = cluster_mode("amqps://u:p@127.0.0.1:5671/%2F");
        s.amqp.tls_ca_file = dir.path().join("nowhere.crt");
        assert_eq!(refused_keys(&s), ["amqp.tls_ca_file"]);
        let text = s.validate().unwrap_err().to_string();
        assert!(
            text.contains("amqp.tls_ca_file: ")
                && text.contains("nowhere.crt is not a readable file"),
            "{text}"
        );
        // A file without a certificate passes the file check and fails when it is loaded.
        let empty = dir.path().join("empty.crt");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        s.amqp.tls_ca_file = empty;
        assert_eq!(refused_keys(&s), Vec::<&str>::new());
        let p = s.amqp.build_tls().unwrap_err();
        assert_eq!(p.key, "amqp.tls_ca_file");
        assert!(p.detail.contains("no certificate in"), "{}", p.detail);
    }

    #[test]
    fn a_client_certificate_comes_with_its_key_and_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        test_pki(dir.path());
        let d = dir.path();
        let mut s = cluster_mode("amqps://u:p@127.0.0.1:5671/%2F");
        s.amqp.tls_ca_file = d.join("ca.crt");
        s.amqp.tls_cert_file = d.join("client.crt");
        assert_eq!(refused_keys(&s), ["amqp.tls_cert_file"]);
        s.amqp.tls_key_file = d.join("client.key");
        assert_eq!(refused_keys(&s), Vec::<&str>::new());
        assert!(s
            .amqp
            .build_tls()
            .unwrap()
            .unwrap()
            .client_auth_cert_resolver
            .has_certs());
        // A key that is not the certificate's.
        s.amqp.tls_key_file = d.join("ca.key");
        let p = s.amqp.build_tls().unwrap_err();
        assert_eq!(p.key, "amqp.tls_cert_file", "{}", p.detail);
        // A certificate file where the key should be.
        s.amqp.tls_key_file = d.join("client.crt");
        assert_eq!(s.amqp.build_tls().unwrap_err().key, "amqp.tls_key_file");
        // Without the CA the client certificate is refused.
        s.amqp.tls_key_file = d.join("client.key");
        s.amqp.tls_ca_file = PathBuf::new();
        s.amqp.urls = "amqp://u:p@127.0.0.1:5672/%2F".into();
        assert_eq!(refused_keys(&s), ["amqp.tls_cert_file"]);
    }
}
