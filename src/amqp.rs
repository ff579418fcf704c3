//! The AMQP 0-9-1 adapter for cluster mode (RabbitMQ), shared by the collector's AMQP source
//! (`ingest::amqp`), the alert publisher and `soilmon broker setup|check`: connecting to the
//! first node that answers, the topology soilmon declares (readings quorum queue, its
//! binding, delivery limit and dead-letter queue), routing probes, and the mapping between
//! MQTT topics and routing keys that RabbitMQ's MQTT plugin applies.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::tcp::{HandshakeResult, RustlsConnector, TcpStream};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{AmqpConfig, MqttConfig};

/// Errors talking to RabbitMQ.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// No configured node accepted a connection.
    #[error("amqp: no node of amqp.urls answered ({tried} tried); last error: {last}")]
    Unreachable {
        /// How many URLs were tried.
        tried: usize,
        /// The last node's error.
        last: String,
    },
    /// A protocol or channel error (e.g. PRECONDITION_FAILED for a queue declared before with
    /// other arguments).
    #[error("amqp: {0}")]
    Protocol(#[from] lapin::Error),
    /// The broker refused (nacked) a publication.
    #[error("amqp: the broker refused a publication to {0:?}")]
    Nacked(String),
}

/// How long one node may take to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The header that marks a `soilmon broker check` routing probe: a collector acks a probe
/// at once and stores nothing.
pub const PROBE_HEADER: &str = "x-soilmon-probe";

/// Connects to the first node of `amqp.urls` that answers, starting at index `start` (so a
/// reconnect after a node loss tries the next node first). Returns the connection and the
/// index of the node it reached. An `amqps://` node is reached over TLS with `amqp.tls`
/// (trusting `amqp.tls_ca_file` only); a node whose certificate does not verify is skipped
/// like one that does not answer, never retried in plain text.
pub async fn connect(cfg: &AmqpConfig, start: usize) -> Result<(Connection, usize), AmqpError> {
    let urls = cfg.url_list();
    let mut last = String::from("amqp.urls is empty");
    for k in 0..urls.len() {
        let i = (start + k) % urls.len();
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name("soilmon".into());
        match tokio::time::timeout(CONNECT_TIMEOUT, connect_node(urls[i], cfg, props)).await {
            Ok(Ok(conn)) => return Ok((conn, i)),
            Ok(Err(e)) => last = format!("node {i}: {e}"),
            Err(_) => last = format!("node {i}: no answer within {CONNECT_TIMEOUT:?}"),
        }
    }
    Err(AmqpError::Unreachable {
        tried: urls.len(),
        last,
    })
}

/// One node: plain AMQP for `amqp://` (only without `amqp.tls`), AMQPS for `amqps://`
/// (only with it). The error text never contains the URL (it holds the password).
// lapin's connector takes a closure returning tcp-stream's `HandshakeResult`, whose error
// holds a mid-handshake stream: its size is lapin's API, not ours.
#[allow(clippy::result_large_err)]
async fn connect_node(
    url: &str,
    cfg: &AmqpConfig,
    props: ConnectionProperties,
) -> Result<Connection, String> {
    let uri: AMQPUri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    match (uri.scheme.clone(), &cfg.tls) {
        (AMQPScheme::AMQP, None) => Connection::connect_uri(uri, props)
            .await
            .map_err(|e| e.to_string()),
        (AMQPScheme::AMQPS, Some(tls)) => {
            let connector = RustlsConnector::from(tls.clone());
            let handshake = Box::new(move |uri: &AMQPUri| tls_stream(uri, &connector));
            Connection::connector(uri, handshake, props)
                .await
                .map_err(|e| format!("TLS: {e}"))
        }
        // Config validation refuses both; kept here so no path ever downgrades.
        (AMQPScheme::AMQP, Some(_)) => {
            Err("plain amqp:// refused: amqp.tls_ca_file is set (use amqps://)".into())
        }
        (AMQPScheme::AMQPS, None) => Err("amqps:// needs amqp.tls_ca_file".into()),
    }
}

/// TCP to the node, then the TLS handshake against the URL's host (a DNS name or an IP
/// address the certificate must name). Runs on lapin's blocking connect thread.
#[allow(clippy::result_large_err)] // see connect_node
fn tls_stream(uri: &AMQPUri, connector: &RustlsConnector) -> HandshakeResult {
    let addr = format!("{}:{}", uri.authority.host, uri.authority.port);
    let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
    let stream = stream.into_rustls(connector, &uri.authority.host)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// `host:port` of every node of `amqp.urls` (for readiness checks; unparsable ones skipped,
/// config validation refuses them).
pub fn node_addrs(cfg: &AmqpConfig) -> Vec<String> {
    cfg.url_list()
        .iter()
        .filter_map(|u| u.parse::<AMQPUri>().ok())
        .map(|u| format!("{}:{}", u.authority.host, u.authority.port))
        .collect()
}

/// The routing key RabbitMQ's MQTT plugin gives an MQTT topic (or filter): `/` and `.`
/// swap places (`soil/v1/stations/st.01/readings` → `soil.v1.stations.st/01.readings`).
pub fn routing_key(topic: &str) -> String {
    topic
        .chars()
        .map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        })
        .collect()
}

/// The MQTT topic of a routing key (the same swap, undone).
pub fn topic_of(routing_key_: &str) -> String {
    routing_key(routing_key_)
}

/// The binding key of the readings queue on the MQTT exchange: the readings filter as a
/// routing-key pattern (`soil.v1.stations.*.readings`).
pub fn readings_binding(mqtt: &MqttConfig) -> String {
    routing_key(&mqtt.readings_filter()).replace('+', "*")
}

/// The routing key a station's readings arrive with.
pub fn station_key(mqtt: &MqttConfig, station: &str) -> String {
    routing_key(&format!(
        "{}/stations/{station}/readings",
        mqtt.topic_prefix
    ))
}

/// The arguments of the readings queue. They are part of the contract: a queue declared
/// before with other arguments makes the declaration fail (PRECONDITION_FAILED), and
/// `deploy/cluster/cluster.sh` declares the same ones (integers as 32-bit signed, as it
/// sends them).
pub fn readings_queue_args(cfg: &AmqpConfig) -> FieldTable {
    let mut t = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    t.insert("x-queue-type".into(), text("quorum"));
    let limit = i32::try_from(cfg.delivery_limit).unwrap_or(i32::MAX);
    t.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit));
    t.insert(
        "x-dead-letter-exchange".into(),
        text(&cfg.dead_letter_exchange),
    );
    // At-least-once dead-lettering (quorum queues only) requires reject-publish: a full
    // queue then refuses publishes (the station gets no PUBACK and retries) instead of
    // dropping the oldest.
    t.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    t.insert("x-overflow".into(), text("reject-publish"));
    t
}

fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    t
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// The arguments of one shard queue: the readings queue's, and one active consumer at a
/// time (the others wait as standbys), so the shard's messages are committed in order.
pub fn shard_queue_args(cfg: &AmqpConfig) -> FieldTable {
    let mut t = readings_queue_args(cfg);
    t.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    t
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// Declares the dead-letter exchange and queue, then the readings queue(s) (see
/// [`declare_readings`]; idempotent: declaring again with the same arguments changes
/// nothing).
pub async fn declare(ch: &Channel, cfg: &AmqpConfig, binding: &str) -> Result<(), AmqpError> {
    ch.exchange_declare(
        &cfg.dead_letter_exchange,
        ExchangeKind::Topic,
        durable_exchange(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(&cfg.dead_letter_queue, durable(), quorum_args())
        .await?;
    ch.queue_bind(
        &cfg.dead_letter_queue,
        &cfg.dead_letter_exchange,
        "#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    declare_readings(ch, cfg, binding).await
}

/// The readings queue bound to `amqp.exchange` with `binding`; or, with `amqp.shards` = K,
/// the consistent-hash exchange bound there with `binding`, and K shard queues bound to it
/// with equal weight, so each station's routing key always lands in the same shard.
async fn declare_readings(ch: &Channel, cfg: &AmqpConfig, binding: &str) -> Result<(), AmqpError> {
    let bind = QueueBindOptions::default();
    if cfg.shards == 0 {
        ch.queue_declare(&cfg.queue, durable(), readings_queue_args(cfg))
            .await?;
        ch.queue_bind(
            &cfg.queue,
            &cfg.exchange,
            binding,
            bind,
            FieldTable::default(),
        )
        .await?;
        return Ok(());
    }
    let hash = cfg.hash_exchange();
    let kind = ExchangeKind::Custom("x-consistent-hash".into());
    ch.exchange_declare(&hash, kind, durable_exchange(), FieldTable::default())
        .await?;
    ch.exchange_bind(
        &hash,
        &cfg.exchange,
        binding,
        ExchangeBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for q in cfg.readings_queues() {
        ch.queue_declare(&q, durable(), shard_queue_args(cfg))
            .await?;
        // The binding key of a consistent-hash exchange is the queue's weight.
        ch.queue_bind(&q, &hash, "1", bind, FieldTable::default())
            .await?;
    }
    Ok(())
}

/// Messages and consumers of a queue that exists (a passive declaration: fails with
/// NOT_FOUND, closing the channel, when it does not).
pub async fn queue_stats(ch: &Channel, queue: &str) -> Result<(u32, u32), AmqpError> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let q = ch.queue_declare(queue, opts, FieldTable::default()).await?;
    Ok((q.message_count(), q.consumer_count()))
}

/// Whether a delivery is a routing probe (see [`PROBE_HEADER`]).
pub fn is_probe(props: &BasicProperties) -> bool {
    props
        .headers()
        .as_ref()
        .is_some_and(|h| h.inner().contains_key(PROBE_HEADER))
}

/// Publishes one mandatory probe per routing key to `exchange` with publisher confirms and
/// returns the keys that no queue is bound for (the broker returned them). A probe that is
/// routed lands in the readings queue, where a collector acks it without storing it.
pub async fn unroutable(
    ch: &Channel,
    exchange: &str,
    keys: &[String],
) -> Result<Vec<String>, AmqpError> {
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from(PROBE_HEADER), AMQPValue::Boolean(true));
    let props = BasicProperties::default().with_headers(headers);
    let mandatory = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut lost = Vec::new();
    for key in keys {
        let confirm = ch
            .basic_publish(exchange, key, mandatory, b"{}", props.clone())
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(Some(_)) => lost.push(key.clone()),
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Nack(_) => return Err(AmqpError::Nacked(key.clone())),
        }
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_and_dots_swap_both_ways() {
        assert_eq!(
            routing_key("soil/v1/stations/st.01/readings"),
            "soil.v1.stations.st/01.readings"
        );
        assert_eq!(
            topic_of("soil.v1.stations.st/01.readings"),
            "soil/v1/stations/st.01/readings"
        );
        let t = "a/b.c/d";
        assert_eq!(topic_of(&routing_key(t)), t);
    }
}
