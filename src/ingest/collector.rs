//! The collector: MQTT persistent session in, one transaction per batch, ordered acks out.
//!
//! Two tasks:
//!
//! - the **poll task** owns `EventLoop::poll()` and does nothing else: it forwards each
//!   incoming publish, tagged with the connection generation it arrived on, into a bounded
//!   channel. When the channel is full it stops polling, the socket is no longer read and
//!   the broker is held back by TCP: memory stays bounded by `ingest.inflight_window`.
//! - the **writer task** takes batches (up to `ingest.batch_max` messages or
//!   `ingest.batch_wait_ms`), parses them, writes them in one transaction (retrying with
//!   back-off while the database is away, sending no acks meanwhile), and only after the
//!   commit acknowledges them **in arrival order**.
//!
//! Acks from an earlier connection are never sent on a later one: the broker reuses packet
//! ids, so such an ack could acknowledge a different, uncommitted message. The generation
//! counter and rumqttc's request channel are cleaned under one lock when a connection
//! fails; the redelivered copy of the message is absorbed by the idempotent writer.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::payload;
use crate::config::Settings;
use crate::domain::standard::Standards;
use crate::registry::Registry;
use crate::store::writer::{self, Context, Received};
use crate::store::StoreError;

/// Errors that stop the collector (input never does).
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The MQTT client could not be set up.
    #[error("mqtt: {0}")]
    Mqtt(#[from] rumqttc::ClientError),
    /// A task panicked or was aborted.
    #[error("collector task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A publish as it came off the connection with the given generation.
struct Delivery {
    generation: u64,
    publish: Publish,
    received_at: chrono::DateTime<Utc>,
}

/// Shared handles the collector needs.
#[derive(Clone)]
pub struct Shared {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Database pool.
    pub pool: Pool,
    /// The current registry snapshot (swapped by the refresh task).
    pub registry: Arc<RwLock<Arc<Registry>>>,
    /// Standards in force.
    pub standards: Arc<Standards>,
    /// Woken when a batch wrote outbox rows.
    pub outbox: Arc<Notify>,
    /// Cancelled on SIGINT/SIGTERM.
    pub shutdown: CancellationToken,
}

/// MQTT options shared by the collector and the alert publisher: credentials from the
/// configuration (the password from the environment), TLS when `mqtt.tls_ca_file` is set.
pub fn mqtt_options(settings: &Settings, client_id: &str) -> MqttOptions {
    let m = &settings.mqtt;
    let mut opts = MqttOptions::new(client_id, &m.host, m.port);
    opts.set_keep_alive(Duration::from_secs(m.keep_alive_secs.max(5)));
    opts.set_max_packet_size(m.max_packet_bytes, m.max_packet_bytes);
    if !m.username.is_empty() {
        opts.set_credentials(&m.username, &m.password);
    }
    if let Some(tls) = &m.tls {
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(tls.clone()),
        ));
    }
    opts
}

/// Exponential back-off between `min` and `max`.
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A back-off starting at `min_ms`, doubling up to `max_ms`.
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        let min = Duration::from_millis(min_ms.max(1));
        Backoff {
            min,
            max: Duration::from_millis(max_ms.max(min_ms.max(1))),
            next: min,
        }
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the minimum after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Sleeps for `d` unless `token` is cancelled first. Returns false when cancelled.
pub async fn sleep_or_cancel(d: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        _ = sleep(d) => true,
        _ = token.cancelled() => false,
    }
}

/// Runs the collector until shutdown.
pub async fn run(shared: Shared) -> Result<(), CollectorError> {
    let settings = &shared.settings;
    let mut opts = mqtt_options(settings, &settings.mqtt.client_id);
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let window = settings.ingest.inflight_window;
    // The request channel carries acks; sized above the whole window so an ack never waits.
    let (client, eventloop) = AsyncClient::new(opts, window * 2 + 64);
    let (tx, rx) = mpsc::channel::<Delivery>(window);
    let generation = Arc::new(Mutex::new(0u64));

    let poll = tokio::spawn(poll_task(
        eventloop,
        client.clone(),
        tx,
        generation.clone(),
        shared.clone(),
    ));
    let writer = tokio::spawn(writer_task(rx, client, generation, shared));
    writer.await?;
    poll.await?;
    Ok(())
}

async fn poll_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Delivery>,
    generation: Arc<Mutex<u64>>,
    shared: Shared,
) {
    let m = &shared.settings.mqtt;
    let filter = m.readings_filter();
    let mut backoff = Backoff::new(m.reconnect_min_ms, m.reconnect_max_ms);
    let token = shared.shutdown.clone();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if token.is_cancelled() && stop_deadline.is_none() {
            // Keep polling a little so the writer's last acks and DISCONNECT go out.
            stop_deadline = Some(Instant::now() + Duration::from_secs(5));
        }
        let event = match stop_deadline {
            None => eventloop.poll().await,
            Some(d) => match tokio::time::timeout_at(d, eventloop.poll()).await {
                Ok(e) => e,
                Err(_) => {
                    warn!("mqtt: shutdown deadline passed before DISCONNECT was sent");
                    return;
                }
            },
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                info!(session_present = ack.session_present, "mqtt: connected");
                if let Err(e) = client.try_subscribe(&filter, QoS::AtLeastOnce) {
                    error!(error = %e, "mqtt: could not queue SUBSCRIBE");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                info!(filter = %filter, "ready: subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if stop_deadline.is_some() {
                    // Shutting down: not stored, not acked, redelivered next session.
                    continue;
                }
                let delivery = Delivery {
                    generation: *lock(&generation),
                    publish,
                    received_at: Utc::now(),
                };
                tokio::select! {
                    r = tx.send(delivery) => {
                        if r.is_err() {
                            return;
                        }
                    }
                    _ = token.cancelled() => {}
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                info!("mqtt: disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                {
                    // Under the lock: later acks carry the old generation and are dropped;
                    // acks already queued for the dead connection are removed from the
                    // request channel by clean().
                    let mut g = lock(&generation);
                    *g += 1;
                    eventloop.clean();
                }
                if stop_deadline.is_some() {
                    return;
                }
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "mqtt: connection lost");
                if !sleep_or_cancel(delay, &token).await {
                    return;
                }
            }
        }
    }
}

fn lock(m: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn writer_task(
    mut rx: mpsc::Receiver<Delivery>,
    client: AsyncClient,
    generation: Arc<Mutex<u64>>,
    shared: Shared,
) {
    let s = &shared.settings;
    let token = shared.shutdown.clone();
    let mut backoff = Backoff::new(s.database.retry_min_ms, s.database.retry_max_ms);
    'batches: loop {
        let first = tokio::select! {
            d = rx.recv() => match d { Some(d) => d, None => break },
            _ = token.cancelled() => break,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + s.ingest.batch_wait();
        while batch.len() < s.ingest.batch_max {
            tokio::select! {
                d = rx.recv() => match d { Some(d) => batch.push(d), None => break },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let registry = match shared.registry.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let now = Utc::now();
        let received: Vec<Received> = batch
            .iter()
            .map(|d| receive(d, now, &shared, &registry))
            .collect();
        let ctx = Context {
            registry: &registry,
            standards: &shared.standards,
            mqtt: &s.mqtt,
            clear_after: s.judge.clear_after,
        };
        let started = Instant::now();
        let report = loop {
            match write(&shared.pool, &ctx, &received).await {
                Ok(r) => {
                    backoff.reset();
                    break r;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(error = %e, messages = received.len(), retry_in_ms = delay.as_millis() as u64,
                          "store: batch not committed; holding acks");
                    if !sleep_or_cancel(delay, &token).await {
                        info!(
                            messages = received.len(),
                            "shutdown: uncommitted batch abandoned (will be redelivered)"
                        );
                        break 'batches;
                    }
                }
            }
        };
        let mut stale = 0;
        {
            let current = lock(&generation);
            for d in &batch {
                if d.generation != *current {
                    stale += 1;
                } else if let Err(e) = client.try_ack(&d.publish) {
                    warn!(error = %e, "mqtt: ack not queued (message will be redelivered)");
                }
            }
        }
        if report.has_outbox() {
            shared.outbox.notify_one();
        }
        for r in received.iter().filter(|r| r.parsed.is_err()) {
            if let Err(rej) = &r.parsed {
                info!(topic = %r.topic, station = r.station_id.as_deref().unwrap_or(""),
                      msg_id = rej.msg_id.as_deref().unwrap_or(""), reason = %rej.code,
                      detail = %rej.detail, "message refused");
            }
        }
        debug!(
            messages = batch.len(),
            stored = report.stored,
            readings = report.readings,
            duplicates = report.duplicates,
            alerts = report.alerts,
            stale_acks_dropped = stale,
            commit_ms = started.elapsed().as_millis() as u64,
            "batch committed"
        );
    }
    // Queue DISCONNECT behind the last acks so the poll task sends them first.
    if let Err(e) = client.try_disconnect() {
        warn!(error = %e, "mqtt: could not queue DISCONNECT");
    }
}

fn receive(
    d: &Delivery,
    now: chrono::DateTime<Utc>,
    shared: &Shared,
    registry: &Registry,
) -> Received {
    let topic = d.publish.topic.clone();
    let station_id = shared.settings.mqtt.station_of(&topic).map(str::to_string);
    let parsed = match &station_id {
        Some(station) => payload::parse(
            station,
            &d.publish.payload,
            now,
            &shared.settings.ingest,
            registry,
        ),
        None => Err(payload::Rejection {
            code: payload::RejectCode::BadTopic,
            detail: format!(
                "topic {topic:?} is not {}",
                shared.settings.mqtt.readings_filter()
            ),
            msg_id: None,
        }),
    };
    Received {
        topic,
        station_id,
        payload: d.publish.payload.to_vec(),
        received_at: d.received_at,
        parsed,
    }
}

async fn write(
    pool: &Pool,
    ctx: &Context<'_>,
    batch: &[Received],
) -> Result<writer::BatchReport, StoreError> {
    let mut client = pool.get().await?;
    writer::write_batch(&mut client, ctx, batch).await
}
