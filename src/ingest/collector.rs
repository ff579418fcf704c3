//! The collector: MQTT persistent session in, one transaction per batch, ordered acks out.
//!
//! Two tasks:
//!
//! - the **poll task** owns `EventLoop::poll()` and the connection: it forwards each
//!   incoming publish, tagged with the connection generation it arrived on, into a bounded
//!   channel. When the channel is full it stops polling, the socket is no longer read and
//!   the broker is held back by TCP: memory stays bounded by `ingest.inflight_window`. It
//!   also writes the writer's acks, in bulk and in order, straight onto the connection
//!   (rumqttc's own request path takes one request per network read of up to ten packets,
//!   so during a backlog drain acks queued there fell behind and were dropped).
//! - the **writer task** takes batches (up to `ingest.batch_max` messages or
//!   `ingest.batch_wait_ms`), parses them, writes them in one transaction (retrying with
//!   back-off while the database is away, sending no acks meanwhile), and only after the
//!   commit acknowledges them **in arrival order**. While one batch commits, the next one is
//!   collected and parsed (never written: batches commit one at a time, in order), so the
//!   service's CPU work overlaps the database's. At most `inflight_window` messages wait in
//!   the channel plus two batches in the writer.
//!
//! Acks from an earlier connection are never sent on a later one: the broker reuses packet
//! ids, so such an ack could acknowledge a different, uncommitted message. Each ack carries
//! the generation of its message; the poll task, which alone bumps the generation when a
//! connection fails, writes only acks of the current one. The redelivered copy of a message
//! whose ack was dropped is absorbed by the idempotent writer.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::Utc;
use deadpool_postgres::Pool;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, PubAck, Publish, QoS};
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
    // The request channel carries only SUBSCRIBE and DISCONNECT: acks go to the poll task.
    let (client, eventloop) = AsyncClient::new(opts, 64);
    let (tx, rx) = mpsc::channel::<Delivery>(window);
    // Acks from the writer to the poll task. Unbounded so the writer never waits on the
    // poll task; it holds at most one packet id per message of the in-flight window.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<ToPoll>();
    let generation = Arc::new(Mutex::new(0u64));

    let poll = tokio::spawn(poll_task(
        eventloop,
        client,
        tx,
        ack_rx,
        generation.clone(),
        shared.clone(),
    ));
    let writer = tokio::spawn(writer_task(rx, ack_tx, generation, shared));
    writer.await?;
    poll.await?;
    Ok(())
}

/// What the writer hands to the poll task.
enum ToPoll {
    /// Acknowledge this packet id, if the connection it arrived on is still the current one.
    Ack {
        /// Connection generation the message arrived on.
        generation: u64,
        /// Its packet id.
        pkid: u16,
    },
    /// The writer has stopped: send the remaining acks, then DISCONNECT.
    Done,
}

/// One step of the poll task.
enum Step {
    Event(Result<Event, rumqttc::ConnectionError>),
    Acks(Option<ToPoll>),
    Deadline,
}

/// Waits until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Writes `first` and every other ack already waiting, in order, on the current connection,
/// then flushes. Acks of an earlier generation are dropped. Returns whether `Done` was seen,
/// or the connection error.
///
/// rumqttc's `EventLoop::poll` takes at most one request from its channel per network read
/// of up to ten packets, so acks queued through `AsyncClient::ack` fall ever further behind a
/// backlog (and are dropped once that channel is full). Writing them here, in bulk, keeps
/// acks in step with commits.
async fn write_acks(
    eventloop: &mut EventLoop,
    first: Option<ToPoll>,
    rx: &mut mpsc::UnboundedReceiver<ToPoll>,
    current: u64,
) -> Result<bool, rumqttc::StateError> {
    let mut next = first;
    let mut done = false;
    let mut wrote = false;
    loop {
        match next {
            None | Some(ToPoll::Done) => {
                done = true;
                break;
            }
            Some(ToPoll::Ack { generation, pkid }) => {
                if generation == current {
                    if let Some(net) = eventloop.network.as_mut() {
                        net.write(Packet::PubAck(PubAck::new(pkid))).await?;
                        wrote = true;
                    }
                }
            }
        }
        match rx.try_recv() {
            Ok(m) => next = Some(m),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
        }
    }
    if wrote {
        if let Some(net) = eventloop.network.as_mut() {
            net.flush().await?;
        }
    }
    Ok(done)
}

async fn poll_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    tx: mpsc::Sender<Delivery>,
    mut acks: mpsc::UnboundedReceiver<ToPoll>,
    generation: Arc<Mutex<u64>>,
    shared: Shared,
) {
    let m = &shared.settings.mqtt;
    let filter = m.readings_filter();
    let mut backoff = Backoff::new(m.reconnect_min_ms, m.reconnect_max_ms);
    let token = shared.shutdown.clone();
    let mut stop_deadline: Option<Instant> = None;
    // SUBACK seen on the current connection: from then on no request waits in rumqttc's
    // channel (until DISCONNECT), so a poll() may be interrupted to write acks without
    // losing a request.
    let mut subscribed = false;
    let mut writer_running = true;
    loop {
        if token.is_cancelled() && stop_deadline.is_none() {
            // Keep polling a little so the writer's last acks and DISCONNECT go out.
            stop_deadline = Some(Instant::now() + Duration::from_secs(5));
        }
        let step = if writer_running && (subscribed || stop_deadline.is_some()) {
            tokio::select! {
                e = eventloop.poll() => Step::Event(e),
                a = acks.recv() => Step::Acks(a),
                _ = until(stop_deadline) => Step::Deadline,
            }
        } else {
            tokio::select! {
                e = eventloop.poll() => Step::Event(e),
                _ = until(stop_deadline) => Step::Deadline,
            }
        };
        let event = match step {
            Step::Deadline => {
                warn!("mqtt: shutdown deadline passed before DISCONNECT was sent");
                return;
            }
            Step::Acks(first) => {
                let current = *lock(&generation);
                match write_acks(&mut eventloop, first, &mut acks, current).await {
                    Ok(false) => continue,
                    Ok(true) => {
                        writer_running = false;
                        // Queued behind the acks just written.
                        if let Err(e) = client.try_disconnect() {
                            warn!(error = %e, "mqtt: could not queue DISCONNECT");
                            return;
                        }
                        continue;
                    }
                    Err(e) => Err(rumqttc::ConnectionError::MqttState(e)),
                }
            }
            Step::Event(e) => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                subscribed = false;
                info!(session_present = ack.session_present, "mqtt: connected");
                if let Err(e) = client.try_subscribe(&filter, QoS::AtLeastOnce) {
                    error!(error = %e, "mqtt: could not queue SUBSCRIBE");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                subscribed = true;
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
                subscribed = false;
                {
                    // Under the lock: acks of the old generation are dropped from now on,
                    // here and in the writer. clean() drops the dead connection.
                    let mut g = lock(&generation);
                    *g += 1;
                    eventloop.clean();
                }
                if stop_deadline.is_some() || !writer_running {
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

/// A batch taken off the channel and parsed, ready to write.
struct Prepared {
    batch: Vec<Delivery>,
    received: Vec<Received>,
    registry: Arc<Registry>,
}

/// Waits for the next message (or shutdown), fills a batch up to `ingest.batch_max` or
/// `ingest.batch_wait_ms`, and parses it. `None` when the channel closed or shutdown began
/// before a first message.
async fn next_batch(
    rx: &mut mpsc::Receiver<Delivery>,
    shared: &Shared,
    token: &CancellationToken,
) -> Option<Prepared> {
    let s = &shared.settings;
    let first = tokio::select! {
        d = rx.recv() => d?,
        _ = token.cancelled() => return None,
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
    let received = batch
        .iter()
        .map(|d| receive(d, now, shared, &registry))
        .collect();
    Some(Prepared {
        batch,
        received,
        registry,
    })
}

/// Writes a prepared batch, retrying with back-off while the database is away. `None` when
/// shutdown interrupted the retries (the batch stays un-acked and will be redelivered).
async fn commit(
    p: &Prepared,
    shared: &Shared,
    backoff: &mut Backoff,
    token: &CancellationToken,
) -> Option<writer::BatchReport> {
    let s = &shared.settings;
    let ctx = Context {
        registry: &p.registry,
        standards: &shared.standards,
        mqtt: &s.mqtt,
        clear_after: s.judge.clear_after,
    };
    loop {
        match write(&shared.pool, &ctx, &p.received).await {
            Ok(r) => {
                backoff.reset();
                return Some(r);
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, messages = p.received.len(), retry_in_ms = delay.as_millis() as u64,
                      "store: batch not committed; holding acks");
                if !sleep_or_cancel(delay, token).await {
                    info!(
                        messages = p.received.len(),
                        "shutdown: uncommitted batch abandoned (will be redelivered)"
                    );
                    return None;
                }
            }
        }
    }
}

/// Takes batches off the channel and commits them one at a time, in arrival order, acking
/// each batch's messages (in order) right after its commit. While one batch commits, the
/// next is collected and parsed, so soilmon's CPU work overlaps the database's.
async fn writer_task(
    mut rx: mpsc::Receiver<Delivery>,
    acks: mpsc::UnboundedSender<ToPoll>,
    generation: Arc<Mutex<u64>>,
    shared: Shared,
) {
    let s = &shared.settings;
    let token = shared.shutdown.clone();
    let mut backoff = Backoff::new(s.database.retry_min_ms, s.database.retry_max_ms);
    let mut upcoming: Option<Prepared> = None;
    loop {
        let current = match upcoming.take() {
            Some(p) if !token.is_cancelled() => p,
            // Shutdown: a batch collected while the previous one committed is not written.
            Some(_) => break,
            None => match next_batch(&mut rx, &shared, &token).await {
                Some(p) => p,
                None => break,
            },
        };
        let started = Instant::now();
        {
            let committing = commit(&current, &shared, &mut backoff, &token);
            tokio::pin!(committing);
            let collecting = next_batch(&mut rx, &shared, &token);
            tokio::pin!(collecting);
            let mut collected = false;
            let report = loop {
                tokio::select! {
                    r = &mut committing => break r,
                    p = &mut collecting, if !collected => {
                        collected = true;
                        upcoming = p;
                    }
                }
            };
            let Some(report) = report else { break };
            // Ack before waiting for the rest of the next batch.
            let stale = send_acks(&current.batch, &acks, &generation);
            log_batch(&current, &report, stale, started, &shared);
            if !collected {
                upcoming = collecting.await;
            }
        }
    }
    // The poll task writes the last acks, then queues DISCONNECT.
    let _ = acks.send(ToPoll::Done);
}

/// Hands the acks of a committed batch to the poll task, in arrival order; messages of an
/// earlier connection are not acked. Returns how many were dropped as stale.
fn send_acks(
    batch: &[Delivery],
    acks: &mpsc::UnboundedSender<ToPoll>,
    generation: &Mutex<u64>,
) -> usize {
    let mut stale = 0;
    let current = lock(generation);
    for d in batch {
        if d.generation != *current {
            stale += 1;
        } else if acks
            .send(ToPoll::Ack {
                generation: d.generation,
                pkid: d.publish.pkid,
            })
            .is_err()
        {
            warn!("mqtt: poll task gone; ack not sent (message will be redelivered)");
        }
    }
    stale
}

fn log_batch(
    p: &Prepared,
    report: &writer::BatchReport,
    stale: usize,
    started: Instant,
    shared: &Shared,
) {
    if report.has_outbox() {
        shared.outbox.notify_one();
    }
    for r in p.received.iter().filter(|r| r.parsed.is_err()) {
        if let Err(rej) = &r.parsed {
            info!(topic = %r.topic, station = r.station_id.as_deref().unwrap_or(""),
                  msg_id = rej.msg_id.as_deref().unwrap_or(""), reason = %rej.code,
                  detail = %rej.detail, "message refused");
        }
    }
    debug!(
        messages = p.batch.len(),
        stored = report.stored,
        readings = report.readings,
        duplicates = report.duplicates,
        alerts = report.alerts,
        stale_acks_dropped = stale,
        commit_ms = started.elapsed().as_millis() as u64,
        "batch committed"
    );
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
