//! The MQTT adapter shared by the collector and the alert publisher: client options from the
//! configuration, a client with Nagle's algorithm off, the reconnect back-off and a
//! cancellable sleep.

use std::time::Duration;

use rumqttc::{AsyncClient, EventLoop, MqttOptions};
use tokio::time::sleep;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;

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

/// A client and event loop for `opts` with Nagle's algorithm off: an ack or an alert is one
/// small packet, and with Nagle on it can wait for the peer's delayed ACK (40 ms on Linux)
/// before it leaves. Measured in the publisher's log: its PUBACK round took 43 ms at
/// the median until both this and Mosquitto's `set_tcp_nodelay` were set, 1.6 ms after
/// (README, Performance).
pub fn mqtt_client(opts: MqttOptions, cap: usize) -> (AsyncClient, EventLoop) {
    let (client, mut eventloop) = AsyncClient::new(opts, cap);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    (client, eventloop)
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
