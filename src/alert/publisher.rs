//! The outbox publisher: sends alert events and reject replies to MQTT, QoS1, and marks an
//! outbox row published only after the broker acknowledged it.
//!
//! Rows are written by the batch writer in the same transaction as the data they describe,
//! so nothing is announced that was not stored and nothing stored goes unannounced. Each
//! round takes the oldest unpublished rows (in id order, so the state changes of one
//! incident arrive in order), publishes them on a fresh clean-session connection's in-order
//! stream, waits for every PUBACK, then marks them. Any failure drops the connection and the
//! whole round is retried: delivery is at-least-once, and subscribers deduplicate by
//! `event_id`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Settings;
use crate::mqtt::{mqtt_client, mqtt_options, sleep_or_cancel, Backoff};
use crate::store::{outbox, StoreError};
use crate::telemetry;

/// Errors of one publishing round (all retried).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Database error reading or marking the outbox.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The MQTT request could not be queued.
    #[error("mqtt: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// The connection failed or PUBACKs did not arrive in time.
    #[error("mqtt: {0}")]
    Connection(String),
}

impl From<tokio_postgres::Error> for PublishError {
    fn from(e: tokio_postgres::Error) -> Self {
        PublishError::Store(StoreError::Db(e))
    }
}

impl From<deadpool_postgres::PoolError> for PublishError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PublishError::Store(StoreError::Pool(e))
    }
}

/// What the poll task reports.
enum Signal {
    Connected,
    Acked,
    Lost(String),
}

/// Longest wait for the PUBACKs of one round.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the publisher until shutdown.
pub async fn run(
    settings: Arc<Settings>,
    pool: Pool,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let m = &settings.mqtt;
    let mut backoff = Backoff::new(m.reconnect_min_ms, m.reconnect_max_ms);
    while !shutdown.is_cancelled() {
        match session(&settings, &pool, &wake, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "alerts: publishing interrupted");
                if !sleep_or_cancel(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// One connection's life: publish rounds until an error or shutdown.
async fn session(
    settings: &Settings,
    pool: &Pool,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> Result<(), PublishError> {
    let batch = settings.alerts.publish_batch;
    let opts = mqtt_options(settings, &settings.alerts.client_id);
    let (client, mut eventloop) = mqtt_client(opts, batch + 16);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(async move {
        loop {
            let signal = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Signal::Connected,
                Ok(Event::Incoming(Packet::PubAck(_))) => Signal::Acked,
                Ok(_) => continue,
                Err(e) => Signal::Lost(e.to_string()),
            };
            let lost = matches!(signal, Signal::Lost(_));
            if tx.send(signal).is_err() || lost {
                return;
            }
        }
    });
    let result = rounds(settings, pool, wake, shutdown, &client, &mut rx).await;
    poller.abort();
    result
}

async fn rounds(
    settings: &Settings,
    pool: &Pool,
    wake: &Notify,
    shutdown: &CancellationToken,
    client: &AsyncClient,
    rx: &mut mpsc::UnboundedReceiver<Signal>,
) -> Result<(), PublishError> {
    match timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(Signal::Connected)) => info!("alerts: publisher connected"),
        Ok(Some(Signal::Lost(e))) => return Err(PublishError::Connection(e)),
        _ => return Err(PublishError::Connection("no CONNACK".into())),
    }
    let idle = Duration::from_millis(settings.alerts.idle_poll_ms);
    loop {
        let t0 = tokio::time::Instant::now();
        let rows = outbox::pending(&pool.get().await?, settings.alerts.publish_batch).await?;
        if rows.is_empty() {
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => {
                    let _ = client.try_disconnect();
                    return Ok(());
                }
                s = rx.recv() => match s {
                    Some(Signal::Lost(e)) => return Err(PublishError::Connection(e)),
                    None => return Err(PublishError::Connection("poll task ended".into())),
                    _ => {}
                },
            }
            continue;
        }
        let t1 = tokio::time::Instant::now();
        let mut ids = Vec::with_capacity(rows.len());
        let alerts = rows.iter().filter(|r| r.kind == "alert").count();
        for r in rows {
            client
                .publish(r.topic, QoS::AtLeastOnce, false, r.payload.to_string())
                .await?;
            ids.push(r.id);
        }
        let t2 = tokio::time::Instant::now();
        let mut acked = 0;
        while acked < ids.len() {
            match timeout(ACK_TIMEOUT, rx.recv()).await {
                Ok(Some(Signal::Acked)) => acked += 1,
                Ok(Some(Signal::Connected)) => {}
                Ok(Some(Signal::Lost(e))) => return Err(PublishError::Connection(e)),
                Ok(None) => return Err(PublishError::Connection("poll task ended".into())),
                Err(_) => return Err(PublishError::Connection("PUBACK timeout".into())),
            }
        }
        outbox::mark_published(&pool.get().await?, &ids).await?;
        telemetry::outbox_published(ids.len(), alerts, t1 - t0, t2 - t1, t2.elapsed());
    }
}
