//! The collector's AMQP source (cluster mode, `ingest.source = "amqp"`): consumes the
//! readings quorum queue with a bounded prefetch and manual acks, forwards each delivery to
//! the collector's writer exactly as the MQTT poll task does, and writes the acks the writer
//! hands back after each commit.
//!
//! Acks go out in arrival order, after the batch's COMMIT, as one `basic.ack` with
//! `multiple` for the newest tag of the current channel: the writer releases batches in the
//! order they arrived, so every older delivery of that channel is committed too. A tag of
//! an earlier channel is never acked on a later one (tags are per channel): each session
//! bumps the generation, and acks of another generation are dropped. Their messages were
//! requeued by the broker when the channel closed and are absorbed by the idempotency key
//! when they come back. Routing probes of `soilmon broker check` are acked at once and not
//! stored. Any error ends the session; the next one starts on the next node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use super::collector::{forward, lock, AckTag, Forward, Shared, ToPoll};
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
    ch.basic_qos(a.prefetch, BasicQosOptions::default()).await?;
    let tag = format!(
        "{}-{}",
        shared.settings.mqtt.client_id,
        uuid::Uuid::now_v7()
    );
    let mut consumer = ch
        .basic_consume(
            &a.queue,
            &tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let current = *lock(generation);
    info!(node = reached, queue = %a.queue, "ready: consuming");
    let token = shared.shutdown.clone();
    let mut stop_deadline: Option<Instant> = None;
    loop {
        if token.is_cancelled() && stop_deadline.is_none() {
            // Stop taking deliveries; keep writing the writer's last acks for a while.
            stop_deadline = Some(Instant::now() + Duration::from_secs(5));
        }
        tokio::select! {
            d = consumer.next(), if stop_deadline.is_none() => match d {
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
                if write_acks(&ch, first, acks, current).await? {
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

/// Takes `first` and every ack already waiting, and acks the newest tag of the current
/// channel with `multiple` (everything older on this channel is committed: batches are
/// released in arrival order). Returns whether the writer said it is done.
async fn write_acks(
    ch: &Channel,
    first: Option<ToPoll>,
    rx: &mut mpsc::UnboundedReceiver<ToPoll>,
    current: u64,
) -> Result<bool, AmqpError> {
    let mut next = first;
    let mut newest: Option<u64> = None;
    let mut done = false;
    loop {
        match next {
            None | Some(ToPoll::Done) => {
                done = true;
                break;
            }
            Some(ToPoll::Ack(AckTag { generation, tag })) => {
                if generation == current {
                    newest = Some(newest.map_or(tag, |n| n.max(tag)));
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
