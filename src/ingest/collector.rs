//! The collector: MQTT persistent session (or an AMQP queue, [`super::amqp`]) in, one
//! transaction per batch, ordered acks out.
//!
//! Two tasks (the AMQP source replaces the poll task with its consumer task; the writer
//! task is the same, and knows of either source only the [`AckTag`] it hands back):
//!
//! - the **poll task** owns `EventLoop::poll()` and the connection: it forwards each
//!   incoming publish, tagged with the connection generation it arrived on, into a bounded
//!   channel. When the channel is full it stops polling, the socket is no longer read and
//!   the broker is held back by TCP: memory stays bounded by `ingest.inflight_window`. It
//!   also writes the writer's acks, in bulk and in order, straight onto the connection
//!   (rumqttc's own request path takes one request per network read of up to ten packets,
//!   so during a backlog drain acks queued there fell behind and were dropped).
//! - the **writer task** writes batches in one transaction each (retrying with back-off
//!   while the database is away, sending no acks meanwhile), and only after the commit
//!   acknowledges them **in arrival order**. Batches form naturally: while one batch
//!   commits, the messages arriving are parsed and gathered into the next (never written:
//!   batches commit one at a time, in order), up to `ingest.batch_max`; an idle writer
//!   starts on the first message at once. So a message at a steady rate waits about one
//!   commit, and a backlog is written in full batches. At most `inflight_window + 1 +
//!   4 × batch_max` messages are held unacked: the channel, the one being forwarded, three
//!   batches in the lanes (or the retry queue) and the batch being gathered
//!   (`soilmon_ingest_inflight_max` shows the high-water mark; `tests/resilience.rs`
//!   asserts the bound during a database outage).
//!
//! Acks from an earlier connection are never sent on a later one: the broker reuses packet
//! ids, so such an ack could acknowledge a different, uncommitted message. Each ack carries
//! the generation of its message; the poll task, which alone bumps the generation when a
//! connection fails, writes only acks of the current one. The redelivered copy of a message
//! whose ack was dropped is absorbed by the idempotent writer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{FuturesUnordered, StreamExt};
use rumqttc::{AsyncClient, Event, EventLoop, Outgoing, Packet, PubAck, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn, Instrument};

use super::order::{InOrder, Ticket};
use super::payload;
pub use super::source::Shared;
use super::source::{forward, lock, AckTag, Delivery, Forward, ToPoll};
use crate::config::{IngestSource, Settings};
use crate::domain::sample::{RejectCode, Rejection};
use crate::mqtt::{mqtt_client, mqtt_options, sleep_or_cancel, Backoff};
use crate::registry::Registry;
use crate::store::chunks::KnownChunks;
use crate::store::writer::{self, Context, Received};
use crate::store::StoreError;
use crate::telemetry;

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

/// Runs the collector until shutdown, on the source `ingest.source` names: the MQTT poll
/// task below, or the AMQP consumer of [`super::amqp`]. Either feeds the same writer task
/// and writes the acks it hands back.
pub async fn run(shared: Shared) -> Result<(), CollectorError> {
    let settings = &shared.settings;
    let window = settings.ingest.inflight_window;
    let (tx, rx) = mpsc::channel::<Delivery>(window);
    // Acks from the writer to the source task. Unbounded so the writer never waits on the
    // source task; it holds at most one tag per message of the in-flight window.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<ToPoll>();
    let generation = Arc::new(Mutex::new(0u64));
    let inflight = Arc::new(telemetry::Inflight::new());

    let forward = Forward {
        tx,
        inflight: inflight.clone(),
    };
    let source = match settings.ingest.source {
        IngestSource::Mqtt => {
            let mut opts = mqtt_options(settings, &settings.mqtt.client_id);
            opts.set_clean_session(false);
            opts.set_manual_acks(true);
            // The request channel carries only SUBSCRIBE and DISCONNECT: acks go to the
            // poll task.
            let (client, eventloop) = mqtt_client(opts, 64);
            tokio::spawn(poll_task(
                eventloop,
                client,
                forward,
                ack_rx,
                generation.clone(),
                shared.clone(),
            ))
        }
        IngestSource::Amqp => tokio::spawn(super::amqp::consume_task(
            forward,
            ack_rx,
            generation.clone(),
            shared.clone(),
        )),
    };
    let writer = tokio::spawn(writer_task(rx, ack_tx, generation, inflight, shared));
    writer.await?;
    source.await?;
    Ok(())
}

/// One step of the poll task.
enum Step {
    Event(Result<Event, rumqttc::ConnectionError>),
    Acks(Option<ToPoll>),
    Deadline,
}

/// The poll task's next step: a broker event, acks from the writer (only when `take_acks`),
/// or the shutdown deadline.
async fn next_step(
    eventloop: &mut EventLoop,
    acks: &mut mpsc::UnboundedReceiver<ToPoll>,
    take_acks: bool,
    stop_deadline: Option<Instant>,
) -> Step {
    if take_acks {
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
    }
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
            Some(ToPoll::Ack(AckTag { generation, tag })) => {
                // Every MQTT tag was made from a u16 packet id.
                if let (true, Ok(pkid)) = (generation == current, u16::try_from(tag)) {
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
    to_writer: Forward,
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
        let take_acks = writer_running && (subscribed || stop_deadline.is_some());
        let event = match next_step(&mut eventloop, &mut acks, take_acks, stop_deadline).await {
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
                // Shutting down: not stored, not acked, redelivered next session.
                let (topic, payload) = (publish.topic, publish.payload.to_vec());
                let tag = u64::from(publish.pkid);
                if stop_deadline.is_none()
                    && !forward(topic, payload, tag, &to_writer, &generation, &token).await
                {
                    return;
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                info!("mqtt: disconnected cleanly");
                return;
            }
            Ok(_) => {}
            Err(e) => {
                subscribed = false;
                new_generation(&mut eventloop, &generation);
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

/// After a connection error: bumps the generation and drops the dead connection, under the
/// lock, so acks of the old generation are dropped from now on, here and in the writer.
fn new_generation(eventloop: &mut EventLoop, generation: &Mutex<u64>) {
    let mut g = lock(generation);
    *g += 1;
    eventloop.clean();
}

/// A batch taken off the channel, each message parsed as it arrived, ready to write.
struct Prepared {
    /// How to acknowledge each message, in arrival order.
    batch: Vec<AckTag>,
    received: Vec<Received>,
    /// The registry snapshot the batch's messages were validated against.
    registry: Arc<Registry>,
    /// Sequence number of the batch's latest attempt (see [`Lanes`]).
    seq: u64,
}

impl Prepared {
    /// An empty batch.
    fn new(shared: &Shared) -> Prepared {
        Prepared {
            batch: Vec::new(),
            received: Vec::new(),
            registry: registry_snapshot(shared),
            seq: 0,
        }
    }

    /// Parses `d` and adds it to the batch. A batch's first message takes the registry
    /// snapshot then current (an empty batch may have waited through a refresh).
    fn push(&mut self, d: Delivery, shared: &Shared) {
        if self.batch.is_empty() {
            self.registry = registry_snapshot(shared);
        }
        self.batch.push(d.ack);
        self.received
            .push(receive(d, Utc::now(), shared, &self.registry));
    }

    fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }
}

/// The current registry snapshot (swapped by the refresh task).
fn registry_snapshot(shared: &Shared) -> Arc<Registry> {
    shared.registry.snapshot()
}

/// Adds the messages already waiting in the channel to `p`, up to `ingest.batch_max`,
/// without waiting for more, unless the writer is `idle` and `ingest.batch_wait_ms` asks it
/// to linger.
async fn top_up(p: &mut Prepared, rx: &mut mpsc::Receiver<Delivery>, shared: &Shared, idle: bool) {
    let s = &shared.settings.ingest;
    while p.batch.len() < s.batch_max {
        match rx.try_recv() {
            Ok(d) => p.push(d, shared),
            Err(_) => break,
        }
    }
    if s.batch_wait_ms == 0 || !idle {
        return;
    }
    let deadline = Instant::now() + s.batch_wait();
    while p.batch.len() < s.batch_max {
        tokio::select! {
            d = rx.recv() => match d { Some(d) => p.push(d, shared), None => break },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
}

/// Batches in the database at once: one finishing (incidents, archive, COMMIT) while the
/// next ones copy their readings or are staged, each on its own connection. Three rather than
/// two: a message arriving while both lanes were busy waited for a lane, and 20 s latency
/// runs measured p99 30–35 ms with three, 48 ms with two and 43 ms with four (README,
/// Performance); in backlog drains a four-lane variant copied no faster than three.
const LANES: usize = 3;

/// A batch in the database: [`run_batch`] of it, with the ticket of its place in line.
type InFlight = Pin<Box<dyn Future<Output = (Ticket, (Prepared, Outcome))> + Send>>;

/// How a batch's transaction ended.
enum Outcome {
    /// Committed.
    Committed(writer::BatchReport, Timing),
    /// Failed; rolled back.
    Failed(StoreError),
    /// Rolled back because the batch before it did not commit.
    Aborted,
}

/// Where a committed batch's time went (logged with it, at debug level).
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// Waiting for a connection and for the previous batch's stage, then the stage itself.
    stage: Duration,
    /// The readings COPY, after waiting for the batches ahead to commit if it may create a
    /// chunk.
    copy: Duration,
    /// Waiting for the previous batch's commit.
    wait: Duration,
    /// Incidents, quarantine, archive and COMMIT.
    finish: Duration,
}

/// How a batch waits for the one before it, and tells the one after it.
struct Order {
    /// Fires when the previous batch's stage is over (`None`: nothing before it).
    prev_staged: Option<oneshot::Receiver<()>>,
    /// Whether the previous batch committed (`None`: nothing before it).
    prev_done: Previous,
    /// This batch's stage is over.
    staged: oneshot::Sender<()>,
    /// Whether this batch committed.
    done: oneshot::Sender<bool>,
}

/// The outcome of the batch before, awaited at most once and remembered.
struct Previous {
    rx: Option<oneshot::Receiver<bool>>,
    committed: Option<bool>,
}

impl Previous {
    /// Whether the previous batch committed (true when there was none); waits for it.
    async fn committed(&mut self) -> bool {
        if let Some(known) = self.committed {
            return known;
        }
        let committed = match self.rx.take() {
            None => true,
            Some(rx) => rx.await.unwrap_or(false),
        };
        self.committed = Some(committed);
        committed
    }

    /// `Failed(e)` when the batches ahead committed (the error is this batch's own), else
    /// `Aborted`.
    async fn failed(&mut self, e: StoreError) -> Outcome {
        if self.committed().await {
            Outcome::Failed(e)
        } else {
            Outcome::Aborted
        }
    }
}

/// Writes one batch on its own connection, in three steps:
///
/// 1. [`writer::stage`] once the previous batch's stage is over (message keys are taken in
///    arrival order);
/// 2. [`writer::copy_readings`] at once when every reading falls in a chunk that exists
///    ([`KnownChunks`]), else once the previous batch committed (and so every batch ahead);
/// 3. [`writer::finish`] once the previous batch committed.
///
/// So a batch may wait in the database on locks of a batch ahead of it (a redelivered message
/// it also holds, a new chunk it created), but never on one behind it, and the app-level
/// waits cannot close a cycle.
async fn run_batch(
    p: Prepared,
    shared: Shared,
    chunks: Arc<KnownChunks>,
    order: Order,
) -> (Prepared, Outcome) {
    let Order {
        prev_staged,
        mut prev_done,
        staged,
        done,
    } = order;
    let outcome = async {
        let t0 = Instant::now();
        let ctx = Context {
            registry: &p.registry,
            standards: &shared.standards,
            mqtt: &shared.settings.mqtt,
            clear_after: shared.settings.judge.clear_after,
            crops: None,
            tracks: Some(&shared.tracks),
            key_cache: Some(&shared.keys),
            archive_head: Some(&shared.archive_head),
        };
        let client = shared.pool.get().await;
        if let Some(prev) = prev_staged {
            // An error means the previous batch ended early: its stage is over too.
            let _ = prev.await;
        }
        let mut client = match client {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.into()),
        };
        // On every early return, dropping the transaction rolls it back. (Matched in place,
        // not bound first: the connection may be taken out of the pool below.)
        let staged = match writer::stage(&mut client, &ctx, &p.received).await {
            Ok(s) => {
                let _ = staged.send(());
                s
            }
            Err(e) => {
                let _ = staged.send(());
                return prev_done.failed(e).await;
            }
        };
        let t1 = Instant::now();
        if !chunks_exist(&staged, &chunks).await && !prev_done.committed().await {
            return Outcome::Aborted;
        }
        if let Err(e) = writer::copy_readings(&staged).await {
            return prev_done.failed(e).await;
        }
        let t2 = Instant::now();
        if !prev_done.committed().await {
            return Outcome::Aborted;
        }
        let t3 = Instant::now();
        let limit = shared.settings.database.commit_timeout();
        let finished = tokio::time::timeout(limit, writer::finish(staged, &ctx)).await;
        let Ok(finished) = finished else {
            // The COMMIT may or may not have happened: never ack, never reuse the connection.
            let _discarded = deadpool_postgres::Object::take(client);
            return Outcome::Failed(StoreError::CommitTimeout(limit));
        };
        match finished {
            Ok(report) => Outcome::Committed(
                report,
                Timing {
                    stage: t1 - t0,
                    copy: t2 - t1,
                    wait: t3 - t2,
                    finish: t3.elapsed(),
                },
            ),
            Err(e) => Outcome::Failed(e),
        }
    }
    .await;
    let _ = done.send(matches!(outcome, Outcome::Committed(..)));
    (p, outcome)
}

/// Whether every reading of the staged batch falls in a chunk that exists, asking the catalog
/// when the known chunks do not cover them. A failed lookup counts as no (the batch then
/// waits for the ones ahead: slower, never unsafe).
async fn chunks_exist(staged: &writer::Staged<'_>, chunks: &KnownChunks) -> bool {
    if chunks.cover(staged.sampled_at()) {
        return true;
    }
    if let Err(e) = chunks.refresh(staged.transaction()).await {
        warn!(error = %e, "store: could not read the readings chunks; copying in turn");
        return false;
    }
    chunks.cover(staged.sampled_at())
}

/// The batches in the database, in arrival order, and what the next one started waits on.
#[derive(Default)]
struct Lanes {
    /// Up to [`LANES`] batches, one connection each, polled as they come.
    running: FuturesUnordered<InFlight>,
    /// Their outcomes, released in the order the batches were started.
    order: InOrder<(Prepared, Outcome)>,
    /// The hypertable chunks known to exist.
    chunks: Arc<KnownChunks>,
    /// The stage and the outcome of the batch most recently started.
    last: Option<(oneshot::Receiver<()>, oneshot::Receiver<bool>)>,
    /// Sequence number of the next batch started (the `batch` field of its span).
    next_seq: u64,
}

impl Lanes {
    /// Starts batches while a lane is free: retries first, then what was gathered (topped up
    /// with what is already waiting).
    async fn start(
        &mut self,
        retry: &mut VecDeque<Prepared>,
        gathering: &mut Prepared,
        rx: &mut mpsc::Receiver<Delivery>,
        shared: &Shared,
    ) {
        while self.order.len() < LANES {
            let mut p = match retry.pop_front() {
                Some(p) => p,
                None if !gathering.is_empty() => {
                    top_up(gathering, rx, shared, self.order.is_empty()).await;
                    std::mem::replace(gathering, Prepared::new(shared))
                }
                None => break,
            };
            p.seq = self.next_seq;
            self.next_seq += 1;
            let (staged, staged_rx) = oneshot::channel();
            let (done, done_rx) = oneshot::channel();
            let (prev_staged, prev_done) = self.last.replace((staged_rx, done_rx)).unzip();
            let order = Order {
                prev_staged,
                prev_done: Previous {
                    rx: prev_done,
                    committed: None,
                },
                staged,
                done,
            };
            let span = tracing::info_span!("batch", batch = p.seq);
            let run = run_batch(p, shared.clone(), self.chunks.clone(), order);
            let ticket = self.order.start();
            let run = async move { (ticket, run.await) };
            self.running.push(Box::pin(run.instrument(span)));
        }
    }

    /// The oldest batch started, once it has finished (the ones behind it that finished
    /// first wait for it); `None` when no batch is in the database. Cancel-safe: an outcome
    /// that arrives is kept until it is released.
    async fn next(&mut self) -> Option<(Prepared, Outcome)> {
        loop {
            if let Some(done) = self.order.release() {
                return Some(done);
            }
            let (ticket, done) = self.running.next().await?;
            self.order.finish(ticket, done);
        }
    }

    /// After a failed batch: collects every batch behind it (they roll back) into `retry`, in
    /// order, and forgets the known chunks (one believed to exist may have been dropped).
    async fn abandon(&mut self, retry: &mut VecDeque<Prepared>) {
        self.chunks.forget();
        while let Some((p, _)) = self.next().await {
            retry.push_back(p);
        }
        self.last = None;
    }
}

/// Takes batches off the channel and commits them in arrival order, acking each batch's
/// messages (in order) right after its commit.
///
/// Batches form by themselves: a batch is whatever arrived while the writer was busy
/// (parsed on arrival, so soilmon's CPU work overlaps the database's), topped up with what
/// is already waiting, up to `ingest.batch_max`. An idle writer starts on the first message
/// without waiting for company, so a lone message waits for about one commit, not for a
/// timer; under a backlog batches grow to `batch_max`.
///
/// Up to [`LANES`] batches are in the database at once, one connection each: while one
/// finishes, the next ones are staged ([`writer::stage`]) one after another and copy their
/// readings side by side, and each finishes only after the one before it committed (see
/// [`run_batch`] for why this cannot deadlock). When a batch fails, every batch behind it is
/// rolled back, and all are retried in order with back-off (nothing is acked meanwhile).
async fn writer_task(
    mut rx: mpsc::Receiver<Delivery>,
    acks: mpsc::UnboundedSender<ToPoll>,
    generation: Arc<Mutex<u64>>,
    inflight: Arc<telemetry::Inflight>,
    shared: Shared,
) {
    let s = &shared.settings;
    let token = shared.shutdown.clone();
    let mut backoff = Backoff::new(s.database.retry_min_ms, s.database.retry_max_ms);
    let mut lanes = Lanes::default();
    // Batches to write again, in order, once `resume_at` has passed.
    let mut retry: VecDeque<Prepared> = VecDeque::new();
    let mut resume_at: Option<Instant> = None;
    let mut gathering = Prepared::new(&shared);
    let mut open = true;
    loop {
        let stopping = token.is_cancelled();
        if resume_at.is_some_and(|t| Instant::now() >= t) {
            resume_at = None;
        }
        if !stopping && resume_at.is_none() {
            lanes
                .start(&mut retry, &mut gathering, &mut rx, &shared)
                .await;
        }
        if lanes.order.is_empty() && (stopping || (!open && retry.is_empty())) {
            // Shutdown: messages gathered but not written are not acked (redelivered later).
            break;
        }
        let room = open && !stopping && gathering.batch.len() < s.ingest.batch_max;
        tokio::select! {
            Some((p, outcome)) = lanes.next() => match outcome {
                Outcome::Committed(report, timing) => {
                    backoff.reset();
                    let _batch = tracing::info_span!("batch", batch = p.seq).entered();
                    let stale = send_acks(&p.batch, &acks, &generation);
                    inflight.released(p.batch.len());
                    log_batch(&p, &report, timing, stale, &shared);
                }
                Outcome::Failed(e) => {
                    let delay = backoff.next_delay();
                    {
                        let _batch = tracing::info_span!("batch", batch = p.seq).entered();
                        telemetry::batch_failed(p.received.len(), &e, delay);
                    }
                    retry.push_back(p);
                    // Every batch behind it rolls back: retry them all, in order.
                    lanes.abandon(&mut retry).await;
                    resume_at = Some(Instant::now() + delay);
                }
                // Only behind a failed batch, whose arm collects it.
                Outcome::Aborted => retry.push_back(p),
            },
            d = rx.recv(), if room => match d {
                Some(d) => gathering.push(d, &shared),
                None => open = false,
            },
            _ = until(resume_at), if resume_at.is_some() => {}
            _ = token.cancelled(), if !stopping => {}
        }
    }
    if !retry.is_empty() {
        info!(
            batches = retry.len(),
            "shutdown: uncommitted batches abandoned (will be redelivered)"
        );
    }
    // The poll task writes the last acks, then queues DISCONNECT.
    let _ = acks.send(ToPoll::Done);
}

/// Hands the acks of a committed batch to the poll task, in arrival order; messages of an
/// earlier connection are not acked. Returns how many were dropped as stale.
fn send_acks(
    batch: &[AckTag],
    acks: &mpsc::UnboundedSender<ToPoll>,
    generation: &Mutex<u64>,
) -> usize {
    let mut stale = 0;
    let current = lock(generation);
    for d in batch {
        if d.generation != *current {
            stale += 1;
        } else if acks.send(ToPoll::Ack(*d)).is_err() {
            warn!("mqtt: poll task gone; ack not sent (message will be redelivered)");
        }
    }
    stale
}

/// Wakes the publisher when the batch wrote outbox rows, and reports the batch (see
/// [`telemetry::batch_committed`]) and its refused messages.
fn log_batch(
    p: &Prepared,
    report: &writer::BatchReport,
    timing: Timing,
    stale: usize,
    shared: &Shared,
) {
    if report.has_outbox() {
        shared.outbox.notify_one();
    }
    for r in &p.received {
        if let Err(rej) = &r.parsed {
            telemetry::message_refused(
                &r.topic,
                r.station_id.as_deref(),
                rej.msg_id.as_deref(),
                rej.code.as_str(),
                &rej.detail,
            );
        }
    }
    telemetry::batch_committed(&telemetry::BatchCommitted {
        messages: report.messages,
        stored: report.stored,
        readings: report.readings,
        duplicates: report.duplicates,
        alerts: report.alerts,
        tracks_read: report.tracks_read,
        rejected: &report.rejected,
        levels: &report.levels,
        commit: report.took,
        stale_acks_dropped: stale,
        oldest_ms: p
            .received
            .first()
            .map_or(0, |r| (Utc::now() - r.received_at).num_milliseconds()),
        stage: timing.stage,
        copy: timing.copy,
        wait: timing.wait,
        finish: timing.finish,
    });
}

fn receive(
    d: Delivery,
    now: chrono::DateTime<Utc>,
    shared: &Shared,
    registry: &Registry,
) -> Received {
    received(
        d.topic,
        d.payload,
        d.received_at,
        now,
        &shared.settings,
        registry,
    )
}

/// A message as the writer takes it: its topic's station and the outcome of parsing it
/// (`bad_topic` when the topic is not a readings topic). Shared with the quarantine replay.
pub fn received(
    topic: String,
    payload: Vec<u8>,
    received_at: chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
    settings: &Settings,
    registry: &Registry,
) -> Received {
    let station_id = settings.mqtt.station_of(&topic).map(str::to_string);
    let parsed = match &station_id {
        Some(station) => payload::parse(station, &payload, now, &settings.ingest, registry),
        None => Err(Rejection {
            code: RejectCode::BadTopic,
            detail: format!("topic {topic:?} is not {}", settings.mqtt.readings_filter()),
            msg_id: None,
        }),
    };
    Received {
        topic,
        station_id,
        payload,
        received_at,
        parsed,
    }
}
