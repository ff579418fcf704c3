//! What the collector's writer and its sources (the MQTT poll task in
//! [`super::collector`], the AMQP consumer in [`super::amqp`]) share: a delivery and the
//! [`AckTag`] that acknowledges it, the way to the writer ([`Forward`], [`forward`]), what
//! the writer hands back ([`ToPoll`]), the connection generation's lock and the handles
//! ([`Shared`]). Both the collector and the AMQP source import this module; neither
//! imports the other's internals, so the flow runs one way: collector → amqp → source.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::standard::Standards;
use crate::registry::SharedRegistry;
use crate::store::archive::HeadGuess;
use crate::store::incidents::TrackCache;
use crate::store::keys::KeyCache;
use crate::telemetry;

/// How the source acknowledges one message: the connection (MQTT) or channel (AMQP)
/// generation it arrived on, and its id there (an MQTT packet id, an AMQP delivery tag).
/// This is all the writer knows of the source: it hands these back, in arrival order, after
/// the commit, and the source task that alone owns the connection writes the acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AckTag {
    /// Connection generation the message arrived on.
    pub(super) generation: u64,
    /// Packet id (MQTT) or delivery tag (AMQP) on that connection.
    pub(super) tag: u64,
}

/// A message as it came off the source, with the handle that acknowledges it.
pub(super) struct Delivery {
    /// How to acknowledge it.
    pub(super) ack: AckTag,
    /// MQTT topic (for AMQP: the routing key turned back into the topic).
    pub(super) topic: String,
    /// Raw payload.
    pub(super) payload: Vec<u8>,
    /// When soilmon received it.
    pub(super) received_at: chrono::DateTime<Utc>,
}

/// Shared handles the collector needs.
#[derive(Clone)]
pub struct Shared {
    /// Configuration.
    pub settings: Arc<Settings>,
    /// Database pool.
    pub pool: Pool,
    /// The current registry snapshot (swapped by the refresh task).
    pub registry: SharedRegistry,
    /// Standards in force.
    pub standards: Arc<Standards>,
    /// Woken when a batch wrote outbox rows.
    pub outbox: Arc<Notify>,
    /// The incident tracks the writer committed last (see [`TrackCache`]).
    pub tracks: Arc<TrackCache>,
    /// The judgement basis and unit keys the writer resolved (see [`KeyCache`]).
    pub keys: Arc<KeyCache>,
    /// The archive head the writer's last commit left (see [`HeadGuess`]).
    pub archive_head: Arc<HeadGuess>,
    /// Cancelled on SIGINT/SIGTERM.
    pub shutdown: CancellationToken,
}

/// What the writer hands to the source task (the MQTT poll task or the AMQP consumer).
pub(super) enum ToPoll {
    /// Acknowledge this message, if the connection it arrived on is still the current one.
    Ack(AckTag),
    /// The writer has stopped: send the remaining acks, then DISCONNECT.
    Done,
}

/// The source task's way to the writer: the bounded channel, and the in-flight count.
pub(super) struct Forward {
    /// The bounded channel to the writer.
    pub(super) tx: mpsc::Sender<Delivery>,
    /// Messages received and not yet acked.
    pub(super) inflight: Arc<telemetry::Inflight>,
}

/// Hands an incoming message (`tag`: its packet id or delivery tag) to the writer, tagged
/// with the current generation (waiting while the channel is full, unless shutdown comes
/// first). Returns false when the writer is gone. The message counts as in flight from here
/// until its ack is handed over.
pub(super) async fn forward(
    topic: String,
    payload: Vec<u8>,
    tag: u64,
    to: &Forward,
    generation: &Mutex<u64>,
    token: &CancellationToken,
) -> bool {
    let delivery = Delivery {
        ack: AckTag {
            generation: *lock(generation),
            tag,
        },
        topic,
        payload,
        received_at: Utc::now(),
    };
    to.inflight.received();
    // `None`: shutdown came first.
    let sent = tokio::select! {
        r = to.tx.send(delivery) => Some(r.is_ok()),
        _ = token.cancelled() => None,
    };
    if sent != Some(true) {
        to.inflight.released(1);
    }
    sent.unwrap_or(true)
}

/// The generation, whatever a panicking holder left.
pub(super) fn lock(m: &Mutex<u64>) -> std::sync::MutexGuard<'_, u64> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
