//! PostgreSQL/TimescaleDB adapter: connection pool, migrations, point registry, the batch
//! writer (and the hypertable chunks it knows of), judged readings and their compact keys,
//! incident tracks, the outbox, the tamper-evident archive, broker identities, the quarantine
//! browser and replay log, alert subscriptions and their deliveries, the queries the CLI uses
//! and the web console's sessions, incident workflow and reads ([`console`]).
//!
//! The store knows nothing of who calls it: its inputs are domain types
//! ([`crate::domain::sample`], [`crate::domain::reading`]) and its own ([`writer::Received`],
//! [`Context`]).

pub mod archive;
pub mod chunks;
pub mod console;
pub mod crops;
pub mod deliveries;
pub mod digests;
pub mod enterprises;
pub mod identities;
pub mod incidents;
pub mod keys;
pub mod lab;
pub mod migrate;
pub mod network;
pub mod outbox;
pub mod plots;
pub mod points;
pub mod quarantine;
pub mod queries;
pub mod readings;
pub(crate) mod samples;
pub mod snapshots;
pub mod subscriptions;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{CropRules, DatabaseConfig, MqttConfig};
use crate::domain::standard::Standards;
use crate::registry::Registry;

/// Plan the next statements of this transaction for their parameters and the tables' sizes
/// now. A prepared statement otherwise falls back to a generic plan made once, possibly when
/// its table was nearly empty, and keeps it while the table grows: measured, a delivery claim
/// planned at the start of a bench ran for 4 minutes on 200,000 rows (a nested loop over a
/// scan of the whole table, where the fresh plan takes 0.1 s), and the publisher's read of
/// the outbox took 17.7 ms a round instead of under 1 ms (docs/performance.md; that read now
/// rules the bad plan out another way, see `outbox::lead_and_read`).
pub(crate) const CUSTOM_PLAN: &str = "SET LOCAL plan_cache_mode = force_custom_plan";

/// Everything a write (a station batch or a lab upload) needs besides the data.
pub struct Context<'a> {
    /// Point registry snapshot the data was validated against.
    pub registry: &'a Registry,
    /// Standards in force.
    pub standards: &'a Standards,
    /// Topic layout.
    pub mqtt: &'a MqttConfig,
    /// Consecutive non-exceeding samples that clear an incident.
    pub clear_after: u32,
    /// Food limits and farmland category rules for crop samples (lab batches); `None` on
    /// the station path (stations measure soil only).
    pub crops: Option<&'a CropRules>,
    /// The incident tracks this writer committed last (the collector's, shared by its
    /// batches); `None`: every batch reads its pairs' tracks from the database.
    pub tracks: Option<&'a incidents::TrackCache>,
    /// The judgement basis and unit keys this writer resolved before (the collector's);
    /// `None`: every batch asks the database for its keys.
    pub key_cache: Option<&'a keys::KeyCache>,
    /// The archive head this writer's last commit left (the collector's); `None`: every
    /// append reads the head under its lock first.
    pub archive_head: Option<&'a archive::HeadGuess>,
}

/// Errors from the database adapter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The connection string did not parse.
    #[error("database url: {0}")]
    Url(tokio_postgres::Error),
    /// The pool could not be built.
    #[error("database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection could be had from the pool.
    #[error("database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A query failed.
    #[error("database: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The archive could not be appended to or read.
    #[error("archive: {0}")]
    Archive(String),
    /// A compact key of the lean schema (a unit, a judgement basis, a sample) could not be
    /// found or stored.
    #[error("lean keys: {0}")]
    Keys(String),
    /// A batch's COMMIT did not answer in time: its outcome is unknown.
    #[error("no answer to COMMIT within {0:?}: outcome unknown, connection discarded")]
    CommitTimeout(std::time::Duration),
    /// A request was refused (unknown or ambiguous reading, bad name, duplicate identity…).
    #[error("{0}")]
    Refused(String),
    /// TLS to the database could not be set up.
    #[error("database TLS: {0}")]
    Tls(String),
    /// An alert event's payload could not be serialised.
    #[error("alert payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// A migration failed.
    #[error("migration {version}: {source}")]
    Migration {
        /// Migration version.
        version: i32,
        /// Underlying error.
        source: tokio_postgres::Error,
    },
}

/// A database error with the server's message (tokio-postgres shows only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// Builds the connection pool. Connections are verified when taken from the pool, so a pool
/// survives a database restart.
///
/// With `database.tls_ca_file` set, connections use TLS (rustls, ring provider) and verify
/// the server against that CA; `sslmode=require` in the URL then refuses a server without
/// TLS. `sslmode=require` without a CA file is refused here rather than left unverified.
pub fn pool(cfg: &DatabaseConfig) -> Result<Pool, StoreError> {
    let mut pg = tokio_postgres::Config::from_str(&cfg.url).map_err(StoreError::Url)?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    pg.keepalives_idle(Duration::from_secs(30));
    if pg.get_application_name().is_none() {
        pg.application_name("soilmon");
    }
    // Fast: a pooled connection is reused unless it is closed, with no test query (one round
    // trip saved per batch and per publishing round). A connection that breaks anyway fails
    // that batch or round, which is retried with back-off on a new one.
    let mc = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let mgr = match cfg.tls_ca() {
        Some(ca) => {
            let tls = crate::config::tls_client_config(ca).map_err(StoreError::Tls)?;
            Manager::from_config(pg, MakeRustlsConnect::new((*tls).clone()), mc)
        }
        None if pg.get_ssl_mode() == SslMode::Require => {
            return Err(StoreError::Tls(
                "sslmode=require needs database.tls_ca_file (the CA of the server certificate)"
                    .into(),
            ))
        }
        None => Manager::from_config(pg, NoTls, mc),
    };
    Ok(Pool::builder(mgr)
        .max_size(cfg.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?)
}
