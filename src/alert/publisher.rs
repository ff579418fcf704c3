//! The outbox publisher: sends alert events and reject replies to MQTT, QoS1 (or, in
//! cluster mode, over AMQP to the exchange RabbitMQ's MQTT plugin delivers from, with
//! publisher confirms), and marks an outbox row published only after the broker
//! acknowledged it.
//!
//! Rows are written by the batch writer in the same transaction as the data they describe,
//! so nothing is announced that was not stored and nothing stored goes unannounced. Each
//! round is one database transaction: it takes the outbox lock (so of N instances exactly
//! one publishes at a time) and, in the same round trip, the oldest unpublished rows (in id
//! order, so the state changes of one incident arrive in order; see
//! [`outbox::lead_and_read`]), publishes them on one in-order stream, waits for every PUBACK
//! (or confirm), then marks them and commits. Any failure drops the connection and the whole
//! round is retried: delivery is at-least-once, and subscribers deduplicate by `event_id`.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::amqp::{self, AmqpError};
use crate::config::{IngestSource, Settings};
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
    /// The AMQP connection failed, or the broker refused a publication.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
}

impl From<lapin::Error> for PublishError {
    fn from(e: lapin::Error) -> Self {
        PublishError::Amqp(AmqpError::Protocol(e))
    }
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

/// What the MQTT poll task reports.
enum Signal {
    Connected,
    Acked,
    Lost(String),
}

/// Longest wait for the PUBACKs (or confirms) of one round.
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
    let mut node = 0;
    while !shutdown.is_cancelled() {
        match session(&settings, &pool, &wake, &shutdown, node).await {
            Ok(()) => return,
            Err(e) => {
                node += 1;
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "alerts: publishing interrupted");
                if !sleep_or_cancel(delay, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Where rows are published: the MQTT broker, or RabbitMQ over AMQP.
enum Sink {
    /// A clean-session MQTT connection and its poll task's signals.
    Mqtt {
        client: AsyncClient,
        rx: mpsc::UnboundedReceiver<Signal>,
        poller: tokio::task::JoinHandle<()>,
    },
    /// An AMQP channel in confirm mode, publishing to `amqp.exchange`.
    Amqp {
        conn: Box<lapin::Connection>,
        channel: Box<lapin::Channel>,
        exchange: String,
    },
}

impl Sink {
    /// Connects the sink `ingest.source` calls for (AMQP: starting at node `node`).
    async fn open(settings: &Settings, node: usize) -> Result<Sink, PublishError> {
        if settings.ingest.source == IngestSource::Amqp {
            let (conn, _) = amqp::connect(&settings.amqp, node).await?;
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(lapin::options::ConfirmSelectOptions::default())
                .await?;
            info!("alerts: publisher connected (amqp)");
            return Ok(Sink::Amqp {
                conn: Box::new(conn),
                channel: Box::new(channel),
                exchange: settings.amqp.exchange.clone(),
            });
        }
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
        let connected = match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(Signal::Connected)) => Ok(()),
            Ok(Some(Signal::Lost(e))) => Err(PublishError::Connection(e)),
            _ => Err(PublishError::Connection("no CONNACK".into())),
        };
        if let Err(e) = connected {
            poller.abort();
            return Err(e);
        }
        info!("alerts: publisher connected");
        Ok(Sink::Mqtt { client, rx, poller })
    }

    /// Publishes `rows` in order and returns once the broker acknowledged every one.
    async fn publish(&mut self, rows: Vec<outbox::Pending>) -> Result<(), PublishError> {
        match self {
            Sink::Mqtt { client, rx, .. } => {
                let n = rows.len();
                for r in rows {
                    client
                        .publish(r.topic, QoS::AtLeastOnce, false, r.payload)
                        .await?;
                }
                let mut acked = 0;
                while acked < n {
                    match timeout(ACK_TIMEOUT, rx.recv()).await {
                        Ok(Some(Signal::Acked)) => acked += 1,
                        Ok(Some(Signal::Connected)) => {}
                        Ok(Some(Signal::Lost(e))) => return Err(PublishError::Connection(e)),
                        Ok(None) => return Err(PublishError::Connection("poll task ended".into())),
                        Err(_) => return Err(PublishError::Connection("PUBACK timeout".into())),
                    }
                }
                Ok(())
            }
            Sink::Amqp {
                channel, exchange, ..
            } => match timeout(ACK_TIMEOUT, publish_amqp(channel, exchange, rows)).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::Connection("AMQP confirm timeout".into())),
            },
        }
    }

    /// Resolves when the connection is known to be lost (MQTT; AMQP errors show at the next
    /// publication).
    async fn lost(&mut self) -> PublishError {
        match self {
            Sink::Mqtt { rx, .. } => loop {
                match rx.recv().await {
                    Some(Signal::Lost(e)) => return PublishError::Connection(e),
                    None => return PublishError::Connection("poll task ended".into()),
                    _ => {}
                }
            },
            Sink::Amqp { .. } => std::future::pending().await,
        }
    }

    /// Disconnects (best effort).
    async fn close(self) {
        match self {
            Sink::Mqtt { client, poller, .. } => {
                let _ = client.try_disconnect();
                // Give the DISCONNECT a moment to leave.
                let _ = timeout(Duration::from_millis(500), poller).await;
            }
            Sink::Amqp { conn, .. } => {
                let _ = conn.close(200, "soilmon publisher stopping").await;
            }
        }
    }
}

/// Publishes `rows` in order on a confirm-mode channel, then waits for every confirm.
/// Routing keys are the MQTT topics as RabbitMQ's MQTT plugin spells them, so MQTT
/// subscribers of the alert topics receive them; messages are persistent.
async fn publish_amqp(
    channel: &lapin::Channel,
    exchange: &str,
    rows: Vec<outbox::Pending>,
) -> Result<(), PublishError> {
    let props = lapin::BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let mut confirms = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = amqp::routing_key(&r.topic);
        let confirm = channel
            .basic_publish(
                exchange,
                &key,
                lapin::options::BasicPublishOptions::default(),
                r.payload.as_bytes(),
                props.clone(),
            )
            .await?;
        confirms.push((confirm, r));
    }
    for (confirm, r) in confirms {
        if let lapin::publisher_confirm::Confirmation::Nack(_) = confirm.await? {
            return Err(AmqpError::Nacked(r.topic.clone()).into());
        }
    }
    Ok(())
}

/// One connection's life: publish rounds until an error or shutdown.
async fn session(
    settings: &Settings,
    pool: &Pool,
    wake: &Notify,
    shutdown: &CancellationToken,
    node: usize,
) -> Result<(), PublishError> {
    let mut sink = Sink::open(settings, node).await?;
    let result = rounds(settings, pool, wake, shutdown, &mut sink).await;
    sink.close().await;
    result
}

/// Publishing rounds, each one transaction under the outbox lock (see
/// [`outbox::lead_and_read`]); an instance that does not get the lock, or finds nothing to
/// publish, waits for a wake-up or `alerts.idle_poll_ms`.
async fn rounds(
    settings: &Settings,
    pool: &Pool,
    wake: &Notify,
    shutdown: &CancellationToken,
    sink: &mut Sink,
) -> Result<(), PublishError> {
    let idle = Duration::from_millis(settings.alerts.idle_poll_ms);
    loop {
        let t0 = tokio::time::Instant::now();
        let mut db = pool.get().await?;
        let tx = db.transaction().await?;
        let rows = outbox::lead_and_read(&tx, settings.alerts.publish_batch)
            .await?
            .unwrap_or_default();
        if rows.is_empty() {
            // Rolls back: the lock is free for the other instances.
            drop(tx);
            drop(db);
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
                _ = shutdown.cancelled() => return Ok(()),
                e = sink.lost() => return Err(e),
            }
            continue;
        }
        let t1 = tokio::time::Instant::now();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let alerts = rows.iter().filter(|r| r.kind == "alert").count();
        sink.publish(rows).await?;
        let t2 = tokio::time::Instant::now();
        outbox::mark_published(&tx, &ids).await?;
        tx.commit().await?;
        telemetry::outbox_published(ids.len(), alerts, t1 - t0, t2 - t1, t2.elapsed());
    }
}
