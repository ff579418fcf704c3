//! Load generation: station messages and a fast QoS1 publisher.
//!
//! The messages are built by the simulator's pure generation
//! ([`soilmon::simulate::generate`]: [`make_message`], 8 metals each; [`pick_kind`] for the
//! share of exceeding samples; [`sampling_time`] for times strictly increasing per point), the
//! same code `soilmon simulate` publishes with. What is the bench's own: the message ids
//! (`{phase tag}{unix ms}-{seq}`, so a phase's messages can be counted by prefix), message `i`
//! sampling point `i mod points` from station `bench{i mod 8 + 1}`, and a fixed seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::report::Throughput;
use crate::{BenchArgs, BenchError};
use soilmon::config::Settings;
use soilmon::domain::point::Point;
use soilmon::domain::standard::Standards;
use soilmon::registry::parse_points_csv;
use soilmon::simulate::generate::{make_message, pick_kind, sampling_time, MessageSpec};

/// Stations the simulated messages come from.
const STATIONS: usize = 8;

/// One pre-rendered station message.
#[derive(Debug, Clone)]
pub struct Msg {
    /// Readings topic of the station.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// Its `msg_id`.
    pub msg_id: String,
    /// The publishing station.
    pub station: String,
}

/// The points of `--points` (at least one).
pub fn read_points(settings: &Settings, args: &BenchArgs) -> Result<Vec<Point>, BenchError> {
    let text = std::fs::read(&args.points)
        .map_err(BenchError::io(format!("reading {}", args.points.display())))?;
    let points = parse_points_csv(text.as_slice(), &settings.registry.counties)
        .map_err(|e| BenchError::Setup(format!("{}: {e}", args.points.display())))?;
    if points.is_empty() {
        return Err(BenchError::Setup("the points file has no points".into()));
    }
    Ok(points)
}

/// Deterministic message source over the bench's points.
pub struct Generator {
    /// The points (also used to build the COPY rows).
    pub points: Vec<Point>,
    /// Standards in force.
    pub standards: Standards,
    prefix: String,
    exceed_share: f64,
    rng: StdRng,
    run: String,
    seq: u64,
    /// The last sampling time of each point.
    last: Vec<Option<DateTime<FixedOffset>>>,
}

impl Generator {
    /// Loads the points and standards; `tag` keeps message ids of different phases apart.
    pub fn new(settings: &Settings, args: &BenchArgs, tag: &str) -> Result<Generator, BenchError> {
        let points = read_points(settings, args)?;
        let standards = settings
            .standards()
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let n = points.len();
        Ok(Generator {
            points,
            standards,
            prefix: settings.mqtt.topic_prefix.clone(),
            exceed_share: args.exceed_share.clamp(0.0, 1.0),
            rng: StdRng::seed_from_u64(5),
            run: format!("{tag}{}", Utc::now().timestamp_millis()),
            seq: 0,
            last: vec![None; n],
        })
    }

    /// The next message, sampled now (strictly later than the previous one of its point).
    pub fn next_msg(&mut self) -> Msg {
        let i = self.seq;
        self.seq += 1;
        let p = (i % self.points.len() as u64) as usize;
        let station = format!("bench{:02}", (i % STATIONS as u64) + 1);
        let msg_id = format!("{}-{i}", self.run);
        let sampled_at = sampling_time(Utc::now(), self.last[p]);
        self.last[p] = Some(sampled_at);
        // No bad messages in the bench (`bad_share` 0): every message must be stored.
        let kind = pick_kind(&mut self.rng, self.exceed_share, 0.0, &mut 0);
        let spec = MessageSpec {
            topic_prefix: &self.prefix,
            station_id: &station,
            msg_id: &msg_id,
            point: &self.points[p],
            sampled_at,
            kind,
        };
        let (topic, payload) = make_message(&spec, &self.standards, &mut self.rng);
        Msg {
            topic,
            payload,
            msg_id,
            station,
        }
    }

    /// The prefix of this generator's message ids (`{run_tag}-{seq}`).
    pub fn run_tag(&self) -> &str {
        &self.run
    }

    /// `n` messages.
    pub fn batch(&mut self, n: usize) -> Vec<Msg> {
        (0..n).map(|_| self.next_msg()).collect()
    }
}

/// A QoS1 publisher counting PUBACKs.
pub struct Publisher {
    client: AsyncClient,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Result<(), String>>,
}

impl Publisher {
    /// Connects a clean-session publisher with an in-flight window of 1000.
    pub async fn connect(port: u16, label: &str) -> Result<Publisher, BenchError> {
        let id = format!("bench-{label}-{:08x}", rand::random::<u32>());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_inflight(1000)
            .set_max_packet_size(1 << 22, 1 << 22);
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        let acked = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let counter = acked.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready_rx).await {
            Ok(Ok(())) => Ok(Publisher {
                client,
                acked,
                task,
            }),
            _ => {
                task.abort();
                Err(BenchError::MqttConnection(
                    "publisher: no CONNACK within 10 s".into(),
                ))
            }
        }
    }

    /// Queues one QoS1 publish (waits only when the request channel is full).
    pub async fn publish(&self, m: &Msg) -> Result<(), BenchError> {
        self.client
            .publish(m.topic.clone(), QoS::AtLeastOnce, false, m.payload.clone())
            .await?;
        Ok(())
    }

    /// PUBACKs received so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `n` publishes were acknowledged (at most `limit`).
    pub async fn wait_acked(&self, n: u64, limit: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        while self.acked() < n {
            if self.task.is_finished() || Instant::now() > deadline {
                return Err(BenchError::MqttConnection(format!(
                    "publisher: {} of {n} PUBACKs",
                    self.acked()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Disconnects.
    pub async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Publishes `msgs` as fast as the broker acknowledges them (two connections in parallel);
/// returns once every PUBACK arrived.
pub async fn publish_backlog(port: u16, msgs: &[Msg]) -> Result<Throughput, BenchError> {
    let started = Instant::now();
    let half = msgs.len() / 2;
    let (a, b) = msgs.split_at(half);
    let one = |part: &[Msg], label: &'static str| {
        let part = part.to_vec();
        async move {
            let p = Publisher::connect(port, label).await?;
            for m in &part {
                p.publish(m).await?;
            }
            p.wait_acked(part.len() as u64, Duration::from_secs(600))
                .await?;
            p.close().await;
            Ok::<(), BenchError>(())
        }
    };
    let (ra, rb) = tokio::join!(one(a, "pub-a"), one(b, "pub-b"));
    ra?;
    rb?;
    Ok(Throughput::new(msgs.len() as u64, started.elapsed()))
}
