//! Alert latency at a steady publish rate: from a station's publish (the moment the message
//! is handed to the MQTT client) to the alert naming that `msg_id` reaching a bureau
//! subscriber (`{prefix}/alerts/#`, QoS1). Every alert counts: `opened`, `escalated`,
//! `deescalated` and `cleared` each carry the `msg_id` of the sample that caused them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::load::{Generator, Publisher};
use crate::report::{percentile, LatencyResult};
use crate::services::BenchEnv;
use crate::{BenchArgs, BenchError};

/// Publish time per `msg_id`.
pub type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// Each alert received: its message's publish time (seconds since the phase started) and its
/// latency (ms), in the order received.
type Latencies = Arc<Mutex<Vec<(f64, f64)>>>;

/// Writes the latencies as CSV (`sent_s,latency_ms`, one alert a line), to see when in the
/// phase the slow ones happened.
fn write_timeline(path: &std::path::Path, timeline: &[(f64, f64)]) -> Result<(), BenchError> {
    let mut out = String::from("sent_s,latency_ms\n");
    for (sent_s, ms) in timeline {
        out.push_str(&format!("{sent_s:.4},{ms:.3}\n"));
    }
    std::fs::write(path, out).map_err(BenchError::io("writing the latency timeline"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the phase against a fresh soilmon.
pub async fn run(
    env: &BenchEnv,
    gen: &mut Generator,
    args: &BenchArgs,
) -> Result<LatencyResult, BenchError> {
    let mut s = env.soilmon("latency").await?;
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Latencies = Arc::new(Mutex::new(Vec::new()));
    let phase_start = Instant::now();
    let (bureau, receiver) = bureau(env, sent.clone(), latencies.clone(), phase_start).await?;
    let total = (args.rate * args.latency_seconds).round() as u64;
    let publish_time = publish_paced(env, gen, args.rate, total, &sent).await?;
    settle(env, total, gen.run_tag()).await?;
    let resources = s.resources();
    let _ = bureau.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), receiver).await;
    s.stop().await?;

    let timeline = std::mem::take(&mut *lock(&latencies));
    if let Some(path) = &args.latency_timeline {
        write_timeline(path, &timeline)?;
    }
    let mut v: Vec<f64> = timeline.iter().map(|&(_, ms)| ms).collect();
    v.sort_by(f64::total_cmp);
    Ok(LatencyResult {
        target_rate: args.rate,
        achieved_rate: total as f64 / publish_time.as_secs_f64().max(1e-9),
        published: total,
        alerts: v.len() as u64,
        p50_ms: percentile(&v, 0.50),
        p99_ms: percentile(&v, 0.99),
        max_ms: v.last().copied().unwrap_or(0.0),
        resources,
    })
}

/// The bureau: subscribes to `{prefix}/alerts/#` (QoS1) and, for each alert naming a
/// `msg_id` in `sent`, records its publish time (since `phase_start`) and the time since then
/// in `latencies`. Returns once the subscription is acknowledged, with the client and its
/// receiving task.
async fn bureau(
    env: &BenchEnv,
    sent: Sent,
    latencies: Latencies,
    phase_start: Instant,
) -> Result<(AsyncClient, JoinHandle<()>), BenchError> {
    let mut opts = MqttOptions::new(
        format!("bench-bureau-{:08x}", rand::random::<u32>()),
        "127.0.0.1",
        env.broker.port,
    );
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 22, 1 << 22);
    let (bureau, mut el) = AsyncClient::new(opts, 1024);
    bureau
        .subscribe(format!("{}/alerts/#", env.topic_prefix), QoS::AtLeastOnce)
        .await?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let receiver = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        while let Ok(ev) = el.poll().await {
            match ev {
                Event::Incoming(Packet::SubAck(_)) => {
                    if let Some(r) = ready.take() {
                        let _ = r.send(());
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    let at = Instant::now();
                    let msg_id = serde_json::from_slice::<serde_json::Value>(&p.payload)
                        .ok()
                        .and_then(|v| v["msg_id"].as_str().map(str::to_string));
                    let Some(msg_id) = msg_id else { continue };
                    let t0 = lock(&sent).get(&msg_id).copied();
                    if let Some(t0) = t0 {
                        let sent_s = t0.saturating_duration_since(phase_start).as_secs_f64();
                        lock(&latencies).push((sent_s, (at - t0).as_secs_f64() * 1000.0));
                    }
                }
                Event::Outgoing(rumqttc::Outgoing::Disconnect) => break,
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), ready_rx)
        .await
        .map_err(|_| BenchError::MqttConnection("bureau: no SUBACK within 10 s".into()))?
        .map_err(|_| BenchError::MqttConnection("bureau: connection failed".into()))?;
    Ok((bureau, receiver))
}

/// The stations: publishes `total` messages at `rate` per second, noting each one's publish
/// time in `sent`, and waits for every PUBACK. Returns the time publishing took.
pub async fn publish_paced(
    env: &BenchEnv,
    gen: &mut Generator,
    rate: f64,
    total: u64,
    sent: &Sent,
) -> Result<Duration, BenchError> {
    let publisher = Publisher::connect(env.broker.port, "latency").await?;
    // Generated before the clock starts: the bench's own work should not load the machine
    // while soilmon is measured.
    let mut msgs = (0..total)
        .map(|_| gen.next_msg())
        .collect::<Vec<_>>()
        .into_iter();
    lock(sent).reserve(total as usize);
    let started = Instant::now();
    let mut published = 0u64;
    while published < total {
        let due = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while published < due {
            let Some(m) = msgs.next() else { break };
            lock(sent).insert(m.msg_id.clone(), Instant::now());
            publisher.publish(&m).await?;
            published += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let publish_time = started.elapsed();
    publisher.wait_acked(total, Duration::from_secs(60)).await?;
    publisher.close().await;
    Ok(publish_time)
}

/// Lets soilmon finish (at most 60 s): every message of the run (ids `{run_tag}-…`) stored
/// and every alert published; then half a second for the last alerts to arrive.
pub async fn settle(env: &BenchEnv, total: u64, run_tag: &str) -> Result<(), BenchError> {
    let db = env.db().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: i64 = db
            .query_one(
                "SELECT (SELECT count(*) FROM outbox_pending)
                      + greatest($1::int8 - (SELECT count(*) FROM samples WHERE msg_id LIKE $2), 0)",
                &[&(total as i64), &format!("{run_tag}-%")],
            )
            .await?
            .get(0);
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}
