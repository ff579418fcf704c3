//! The collector's AMQP source (cluster mode, `ingest.source = "amqp"`): consumes the
//! readings quorum queue with a bounded prefetch and manual acks, forwards each delivery to
//! the collector's writer exactly as the MQTT poll task does, and writes the acks the writer
//! hands back after each commit.
//!
//! Acks go out in arrival order, after the batch's COMMIT, as one `basic.ack` with
//! `multiple` for the newest tag of the current channel: the writer releases batches in the
//! order they arrived, so every older delivery of that channel is committed too. With
//! `amqp.shards` ≥ 1 the channel carries one consumer per shard queue, whose deliveries may
//! be forwarded out of tag order, so each is acked on its own. A tag of
//! an earlier channel is never acked on a later one (tags are per channel): each session
//! bumps the generation, and acks of another generation are dropped. Their messages were
//! requeued by the broker when the channel closed and are absorbed by the idempotency key
//! when they come back. Routing probes of `soilmon broker check` are acked at once and not
//! stored. Any error ends the session; the next one starts on the next node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::source::{forward, lock, AckTag, Forward, Shared, ToPoll};
use crate::amqp::{self, AmqpError};
use crate::mqtt::{sleep_or_cancel, Backoff};

/// How a session ended without an error.
enum End {
    /// The writer is done (shutdown): nothing more to do.
    Done,
}

/// Runs AMQP sessions until the writer is done, reconnecting (to the next node) after
/// every failure.
pub(super) async fn consume_task(
    to_writer: Forward,
    mut acks: mpsc::UnboundedReceiver<ToPoll>,
    generation: Arc<Mutex<u64>>,
    shared: Shared,
) {
    let m = &shared.settings.mqtt;
    let mut backoff = Backoff::new(m.reconnect_min_ms, m.reconnect_max_ms);
    let mut node = 0;
    loop {
        let result = session(&mut node, &to_writer, &mut acks, &generation, &shared).await;
        // Tags of the channel that ended must never be acked on the next one.
        *lock(&generation) += 1;
        match result {
            Ok(End::Done) => return,
            Err(e) => {
                node += 1;
                if shared.shutdown.is_cancelled() {
                    return;
                }
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "amqp: connection lost");
                if !sleep_or_cancel(delay, &shared.shutdown).await {
                    return;
                }
            }
        }
        if shared.shutdown.is_cancelled() {
            return;
        }
        backoff.reset();
    }
}

/// One connection: consume, forward, ack, until an error or the writer is done.
async fn session(
    node: &mut usize,
    to_writer: &Forward,
    acks: &mut mpsc::UnboundedReceiver<ToPoll>,
    generation: &Mutex<u64>,
    shared: &Shared,
) -> Result<End, AmqpError> {
    let a = &shared.settings.amqp;
    let (conn, reached) = amqp::connect(a, *node).await?;
    *node = reached;
    let ch = conn.create_channel().await?;
    let queues = a.readings_queues();
    // Per consumer: the prefetch is split across the shard queues.
    let per_queue = (a.prefetch / queues.len().max(1) as u16).max(1);
    ch.basic_qos(per_queue, BasicQosOptions::default()).await?;
    let mut consumers = Vec::with_capacity(queues.len());
    for q in &queues {
        let tag = format!(
            "{}-{}",
            shared.settings.mqtt.client_id,
            uuid::Uuid::now_v7()
        );
        let c = ch
            .basic_consume(
                q,
                &tag,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // A consumer the broker ends yields `None` once: the session then ends too.
        consumers.push(c.map(Some).chain(stream::once(async { None })).boxed());
    }
    let mut consumer = stream::select_all(consumers);
    // With several consumers on the channel, deliveries of different queues may be
    // forwarded out of delivery-tag order: each is acked on its own, never with `multiple`.
    let multiple = queues.len() == 1;
    let current = *lock(generation);
    info!(node = reached, queues = queues.len(), queue = %queues.join(","), "ready: consuming");
    let token = shared.shutdown.clone();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if token.is_cancelled() && stop_deadline.is_none() {
            // Stop taking deliveries; keep writing the writer's last acks for a while.
            stop_deadline = Some(Instant::now() + Duration::from_secs(5));
        }
        tokio::select! {
            d = consumer.next(), if stop_deadline.is_none() => match d.flatten() {
                Some(Ok(d)) => {
                    if amqp::is_probe(&d.properties) {
                        ch.basic_ack(d.delivery_tag, BasicAckOptions::default()).await?;
                        continue;
                    }
                    let topic = amqp::topic_of(d.routing_key.as_str());
                    if !forward(topic, d.data, d.delivery_tag, to_writer, generation, &token).await {
                        return close(&conn, End::Done).await;
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => return Err(lapin::Error::InvalidChannelState(ch.status().state()).into()),
            },
            first = acks.recv() => {
                if write_acks(&ch, first, acks, current, multiple).await? {
                    return close(&conn, End::Done).await;
                }
            }
            _ = until(stop_deadline), if stop_deadline.is_some() => {
                warn!("amqp: shutdown deadline passed before the writer finished");
                return close(&conn, End::Done).await;
            }
            _ = token.cancelled(), if stop_deadline.is_none() => {}
        }
    }
}

/// Closes the connection (unacked deliveries go back to the queue) and returns `end`.
async fn close(conn: &Connection, end: End) -> Result<End, AmqpError> {
    if let Err(e) = conn.close(200, "soilmon collector stopping").await {
        warn!(error = %e, "amqp: close failed (deliveries are requeued anyway)");
    }
    Ok(end)
}

/// Waits until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Takes `first` and every ack already waiting, and acks those of the current channel:
/// with `multiple`, only the newest tag (everything older on this channel is committed:
/// batches are released in arrival order, and one consumer's deliveries arrive in tag
/// order); without, each tag on its own. Returns whether the writer said it is done.
async fn write_acks(
    ch: &Channel,
    first: Option<ToPoll>,
    rx: &mut mpsc::UnboundedReceiver<ToPoll>,
    current: u64,
    multiple: bool,
) -> Result<bool, AmqpError> {
    let mut next = first;
    let mut newest: Option<u64> = None;
    let mut done = false;
    let single = BasicAckOptions { multiple: false };
    loop {
        match next {
            None | Some(ToPoll::Done) => {
                done = true;
                break;
            }
            Some(ToPoll::Ack(AckTag { generation, tag })) => {
                if generation == current && multiple {
                    newest = Some(newest.map_or(tag, |n| n.max(tag)));
                } else if generation == current {
                    ch.basic_ack(tag, single).await?;
                }
            }
        }
        match rx.try_recv() {
            Ok(m) => next = Some(m),
            Err(mpsc::error::TryRecvError::Empty) => break,
            Err(mpsc::error::TryRecvError::Disconnected) => next = None,
        }
    }
    if let Some(tag) = newest {
        ch.basic_ack(tag, BasicAckOptions { multiple: true })
            .await?;
    }
    Ok(done)
}
