//! The limits soilmon is measured against: the broker (a bare subscriber draining the
//! backlog, acking on receipt, storing nothing) and the database (binary COPY of the same
//! readings into a table identical to `readings`).

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::time::Instant;

use crate::load::Msg;
use crate::report::Throughput;
use crate::services::BenchEnv;
use crate::BenchError;
use soilmon::config::{MqttConfig, Settings};
use soilmon::domain::reading::{judge_sample, JudgedReading};
use soilmon::ingest::payload;
use soilmon::registry::Registry;
use soilmon::store::keys::Keys;
use soilmon::store::readings::SampleRef;

/// Sends DISCONNECT and polls `el` until it went out (at most 5 s), flushing the PUBACKs
/// still queued before it.
pub async fn disconnect(client: &AsyncClient, el: &mut EventLoop) {
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = el.poll().await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                break;
            }
        }
    })
    .await;
}

/// A persistent-session subscriber registered before the backlog is published.
pub struct BareSubscriber {
    port: u16,
    id: String,
    filter: String,
}

fn options(port: u16, id: &str, clean: bool) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(clean)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 22, 1 << 22);
    opts
}

impl BareSubscriber {
    /// Connects with `clean_session = false`, subscribes to every station's readings (QoS1)
    /// and disconnects: from now on the broker queues the readings for it.
    pub async fn register(port: u16, mqtt: &MqttConfig) -> Result<BareSubscriber, BenchError> {
        let s = BareSubscriber {
            port,
            id: format!("bench-bare-{:08x}", rand::random::<u32>()),
            filter: mqtt.readings_filter(),
        };
        let (client, mut el) = AsyncClient::new(options(port, &s.id, false), 16);
        client.subscribe(&s.filter, QoS::AtLeastOnce).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, el.poll())
                .await
                .map_err(|_| BenchError::MqttConnection("bare subscriber: no SUBACK".into()))?
                .map_err(|e| BenchError::MqttConnection(e.to_string()))?;
            if let Event::Incoming(Packet::SubAck(_)) = ev {
                break;
            }
        }
        client.disconnect().await?;
        while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, el.poll()).await {
            if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                break;
            }
        }
        Ok(s)
    }

    /// Reconnects (session resumed) and receives `n` queued messages, each acked on receipt.
    /// Timed from the connection attempt to the `n`-th message.
    pub async fn drain(self, n: u64) -> Result<Throughput, BenchError> {
        let mut opts = options(self.port, &self.id, false);
        opts.set_inflight(1000);
        let (client, mut el) = AsyncClient::new(opts, 4096);
        let started = Instant::now();
        let mut got = 0u64;
        while got < n {
            let ev = tokio::time::timeout(Duration::from_secs(30), el.poll())
                .await
                .map_err(|_| {
                    BenchError::MqttConnection(format!(
                        "bare subscriber: stalled after {got} of {n} messages"
                    ))
                })?
                .map_err(|e| BenchError::MqttConnection(e.to_string()))?;
            if let Event::Incoming(Packet::Publish(_)) = ev {
                got += 1;
            }
        }
        let elapsed = started.elapsed();
        // Flush the last PUBACKs, then end the session for good.
        disconnect(&client, &mut el).await;
        let (c2, mut el2) = AsyncClient::new(options(self.port, &self.id, true), 4);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Ok(ev) = el2.poll().await {
                if let Event::Incoming(Packet::ConnAck(_)) = ev {
                    let _ = c2.disconnect().await;
                }
                if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                    break;
                }
            }
        })
        .await;
        Ok(Throughput::new(n, elapsed))
    }
}

/// Parses and judges `msgs` exactly as soilmon does (not timed).
pub fn judged_rows(
    msgs: &[Msg],
    settings: &Settings,
    registry: &Registry,
    standards: &soilmon::domain::standard::Standards,
) -> Vec<JudgedReading> {
    let now = Utc::now() + chrono::TimeDelta::seconds(60);
    let mut out = Vec::with_capacity(msgs.len() * 8);
    for m in msgs {
        let Some(station) = settings.mqtt.station_of(&m.topic) else {
            continue;
        };
        let Ok(s) = payload::parse(station, &m.payload, now, &settings.ingest, registry) else {
            continue;
        };
        if let Some(point) = registry.get(&s.point_id) {
            out.extend(judge_sample(standards, point, &s, Utc::now()));
        }
    }
    out
}

/// Writes the readings of `msgs` by binary COPY into `bench_copy_readings` (created
/// `LIKE readings INCLUDING ALL`, made a hypertable the same way), `chunk` rows per
/// committed COPY. Their units and judgement bases get their keys first (in the real tables,
/// as the writer does once per batch); each message stands for a sample of its own. Only the
/// COPY statements are timed.
pub async fn copy_limit(
    env: &BenchEnv,
    settings: &Settings,
    msgs: &[Msg],
    chunk: usize,
) -> Result<Throughput, BenchError> {
    let setup = |e: soilmon::store::StoreError| BenchError::Setup(e.to_string());
    let mut database = settings.database.clone();
    database.url = env.db_url.clone();
    let pool = soilmon::store::pool(&database).map_err(setup)?;
    let db = pool
        .get()
        .await
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    db.batch_execute(
        "DROP TABLE IF EXISTS bench_copy_readings;
         CREATE TABLE bench_copy_readings (LIKE readings INCLUDING ALL);
         SELECT create_hypertable('bench_copy_readings', by_range('sampled_at', INTERVAL '90 days'),
                                  create_default_indexes => false);",
    )
    .await?;
    let (points, _) = soilmon::store::points::load(&db).await.map_err(setup)?;
    let registry = Registry::new(points);
    let standards = settings
        .standards()
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let point_keys: HashMap<String, i32> = db
        .query("SELECT point_id, point_key FROM points", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let per_chunk = (chunk / 8).max(1);
    let copy = soilmon::store::readings::copy_statement("bench_copy_readings");
    let mut rows_total = 0u64;
    let mut timed = Duration::ZERO;
    for (n, part) in msgs.chunks(per_chunk).enumerate() {
        let rows = judged_rows(part, settings, &registry, &standards);
        let keys = Keys::for_readings(&db, &rows).await.map_err(setup)?;
        // A message's readings are consecutive: each message is one sample.
        let mut sample_key = (n * per_chunk) as i64;
        let mut last: Option<&str> = None;
        let with_samples = rows.iter().map(|j| {
            if last != Some(j.msg_id.as_str()) {
                sample_key += 1;
                last = Some(&j.msg_id);
            }
            let sample = SampleRef {
                sample_key,
                point_key: point_keys.get(&j.point_id).copied().unwrap_or(0),
            };
            (j, sample)
        });
        let started = Instant::now();
        soilmon::store::readings::copy_into(&db, copy.as_str(), &keys, with_samples)
            .await
            .map_err(setup)?;
        timed += started.elapsed();
        rows_total += rows.len() as u64;
    }
    let expected = msgs.len() as u64 * 8;
    let stored: i64 = db
        .query_one("SELECT count(*) FROM bench_copy_readings", &[])
        .await?
        .get(0);
    if stored as u64 != rows_total || rows_total != expected {
        return Err(BenchError::Check(format!(
            "COPY limit: {stored} rows stored, {rows_total} copied, {expected} expected"
        )));
    }
    db.batch_execute("DROP TABLE bench_copy_readings").await?;
    Ok(Throughput::new(rows_total, timed))
}
