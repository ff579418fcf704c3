//! What `soilmon run` starts, as a library call a test can make in-process.
//!
//! [`start`] returns at once with a [`ServiceHandle`]; the service then migrates (retrying
//! while the database is not there yet), loads the registry, and runs the registry
//! refresher, the alert publisher, the delivery engine, the overdue check, the HTTP API and the MQTT collector until
//! [`ServiceHandle::shutdown`] (or the collector stops with an error). The command line
//! only adds the SIGINT/SIGTERM handler.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{ConfigError, CropRules, Settings};
use crate::domain::obligation::Obligations;
use crate::domain::standard::Standards;
use crate::http::auth::{AuthError, TokenStore};
use crate::ingest::collector::{self, CollectorError, Shared};
use crate::mqtt::{sleep_or_cancel, Backoff};
use crate::registry::{Registry, SharedRegistry};
use crate::store::{self, StoreError};
use crate::{alert, deliver, http, network, snapshots};

/// Errors that stop the service (or keep it from starting).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration or the standards files are not usable.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// The database pool could not be built.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The API tokens file could not be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The collector stopped.
    #[error(transparent)]
    Collector(#[from] CollectorError),
    /// A service task panicked or was aborted.
    #[error("service task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<ConfigError> for ServiceError {
    fn from(e: ConfigError) -> ServiceError {
        ServiceError::Config(Box::new(e))
    }
}

/// A running service: stop it with [`ServiceHandle::shutdown`].
#[derive(Debug)]
pub struct ServiceHandle {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServiceError>>,
}

impl ServiceHandle {
    /// The token that stops the service when cancelled (for a signal handler).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the service has stopped, by shutdown or by a collector error.
    pub async fn wait(self) -> Result<(), ServiceError> {
        self.task.await?
    }

    /// Asks the service to stop and waits until every task has ended.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// Loads the standards, builds the pool and starts the service in the background.
/// Must be called inside a Tokio runtime.
pub fn start(settings: Arc<Settings>) -> Result<ServiceHandle, ServiceError> {
    let standards = Arc::new(settings.standards()?);
    let obligations = Arc::new(settings.obligations()?);
    let crops = Arc::new(settings.crop_rules()?);
    let pool = store::pool(&settings.database)?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        settings,
        Loaded {
            standards,
            obligations,
            crops,
        },
        pool,
        shutdown.clone(),
    ));
    Ok(ServiceHandle { shutdown, task })
}

/// The rule data loaded and checked before the service starts.
struct Loaded {
    standards: Arc<Standards>,
    obligations: Arc<Obligations>,
    crops: Arc<CropRules>,
}

/// The service's life: wait for the database, start the tasks, stop them in order.
async fn run(
    settings: Arc<Settings>,
    loaded: Loaded,
    pool: Pool,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let Loaded {
        standards,
        obligations,
        crops,
    } = loaded;
    let Some(registry) = wait_for_database(&settings, &pool, &shutdown).await else {
        return Ok(());
    };
    info!(points = registry.len(), "registry loaded");
    let registry = SharedRegistry::new(registry);
    let outbox = Arc::new(Notify::new());

    let periodic = spawn_periodic(
        &settings,
        &pool,
        &registry,
        &obligations,
        &outbox,
        &shutdown,
    );
    let publisher = tokio::spawn(alert::publisher::run(
        settings.clone(),
        pool.clone(),
        outbox.clone(),
        shutdown.clone(),
    ));
    let deliver = match spawn_deliveries(&settings, &shutdown) {
        Ok(d) => d,
        Err(e) => {
            shutdown.cancel();
            return Err(e);
        }
    };
    let tokens = match TokenStore::open(&settings.http.tokens_file) {
        Ok(t) => t,
        Err(e) => {
            shutdown.cancel();
            return Err(e.into());
        }
    };
    if tokens.is_empty() {
        warn!("http: no API tokens configured (http.tokens_file); every /v1 request will get 401");
    }
    let metrics = http::metrics::install()
        .map_err(|e| warn!(error = %e, "metrics recorder not installed"))
        .ok();
    let http = tokio::spawn(http::serve(
        Arc::new(http::AppState {
            settings: settings.clone(),
            pool: pool.clone(),
            registry: registry.clone(),
            standards: standards.clone(),
            obligations,
            crops,
            outbox: outbox.clone(),
            tokens,
            metrics,
            limiter: http::RateLimiter::new(settings.http.rate_limit_per_minute),
        }),
        shutdown.clone(),
    ));
    let shared = Shared {
        settings: settings.clone(),
        pool,
        registry,
        standards,
        outbox,
        tracks: Arc::default(),
        keys: Arc::default(),
        archive_head: Arc::default(),
        shutdown: shutdown.clone(),
    };
    let result = collector::run(shared).await;
    shutdown.cancel();
    publisher.await?;
    if let Some(d) = deliver {
        d.await?;
    }
    for task in periodic {
        task.await?;
    }
    if let Err(e) = http.await? {
        warn!(error = %e, "http server stopped with an error");
    }
    result?;
    info!("stopped");
    Ok(())
}

/// Starts the tasks that run on a clock until shutdown: the registry refresher, the overdue
/// check and the soil tier snapshot refresh.
fn spawn_periodic(
    settings: &Arc<Settings>,
    pool: &Pool,
    registry: &SharedRegistry,
    obligations: &Arc<Obligations>,
    outbox: &Arc<Notify>,
    shutdown: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(refresh_registry(
            pool.clone(),
            registry.clone(),
            Duration::from_secs(settings.ingest.registry_refresh_secs.max(1)),
            shutdown.clone(),
        )),
        tokio::spawn(network::run_overdue_check(
            settings.clone(),
            obligations.clone(),
            pool.clone(),
            outbox.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(snapshots::run_tier_refresh(
            settings.clone(),
            pool.clone(),
            shutdown.clone(),
        )),
    ]
}

/// Starts the delivery engine when `deliver.enabled`, on a pool of its own: a slow receiver
/// never holds a connection the collector or the publisher needs.
fn spawn_deliveries(
    settings: &Arc<Settings>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<()>>, ServiceError> {
    if !settings.deliver.enabled {
        return Ok(None);
    }
    let cfg = crate::config::DatabaseConfig {
        pool_size: settings.deliver.pool_size,
        ..settings.database.clone()
    };
    let pool = store::pool(&cfg)?;
    Ok(Some(tokio::spawn(deliver::engine::run(
        settings.clone(),
        pool,
        shutdown.clone(),
    ))))
}

/// Migrates and loads the registry, retrying while the database is not there yet;
/// `None` when shut down first.
async fn wait_for_database(
    settings: &Settings,
    pool: &Pool,
    shutdown: &CancellationToken,
) -> Option<Registry> {
    let mut backoff = Backoff::new(
        settings.database.retry_min_ms,
        settings.database.retry_max_ms,
    );
    loop {
        match prepare(pool).await {
            Ok(r) => return Some(r),
            Err(e) => {
                let d = backoff.next_delay();
                warn!(error = %e, retry_in_ms = d.as_millis() as u64, "startup: database not ready");
                if !sleep_or_cancel(d, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Applies the migrations and loads the registry.
async fn prepare(pool: &Pool) -> Result<Registry, StoreError> {
    let mut client = pool.get().await?;
    store::migrate::run(&mut client).await?;
    let (points, skipped) = store::points::load(&client).await?;
    if skipped > 0 {
        warn!(
            skipped,
            "registry rows with unknown land use or point type skipped"
        );
    }
    Ok(Registry::new(points))
}

/// Reloads the registry every `every` until shutdown; a failed reload keeps the previous
/// snapshot.
async fn refresh_registry(
    pool: Pool,
    registry: SharedRegistry,
    every: Duration,
    shutdown: CancellationToken,
) {
    while sleep_or_cancel(every, &shutdown).await {
        let loaded = match pool.get().await {
            Ok(client) => store::points::load(&client).await,
            Err(e) => Err(e.into()),
        };
        match loaded {
            Ok((points, _)) => registry.replace(Registry::new(points)),
            Err(e) => warn!(error = %e, "registry refresh failed; keeping the previous snapshot"),
        }
    }
}
