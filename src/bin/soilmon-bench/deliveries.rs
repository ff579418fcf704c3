//! Deliveries to webhooks (`--deliveries`), two measurements against an HTTP receiver the
//! bench runs in-process on loopback:
//!
//! 1. **Latency**: `--subscriptions` webhook subscriptions of one city-wide bureau, no
//!    filter, each receiving every alert; stations publish at `--rate` with
//!    `--exceed-share` exceeding samples for `--latency-seconds`. For every request the
//!    receiver gets, the time from the publish of the message whose `msg_id` the alert
//!    names to the request's arrival. Reported: p50, p99, max over all requests.
//! 2. **Rate against a slow receiver**: one subscription whose receiver answers after
//!    `--slow-ms`; its backlog (the alerts of a burst published while it is paused) is
//!    delivered once with concurrency 1 (strict order: one request at a time) and once with
//!    `--slow-concurrency` (in order per incident key). Reported: deliveries per second
//!    for each, each run bounded by 60 s.
//!
//! Subscriptions are written straight into the bench database and its secrets file (the
//! same rows and lines `soilmon subscriptions add` writes). Before them, a warm-up of
//! [`WARM_UP`] messages at 50 a second stores the judgement bases and code rows every later
//! message shares, so the measured run starts on a warm database (and its alerts, raised
//! before any subscription exists, are fanned out to nobody).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use serde::Serialize;
use tokio::time::Instant;

use crate::latency::{publish_paced, settle, Sent};
use crate::load::Generator;
use crate::report::percentile;
use crate::services::BenchEnv;
use crate::{BenchArgs, BenchError};
use soilmon::config::Settings;

/// Result of the deliveries phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveriesResult {
    /// Webhook subscriptions in the latency run.
    pub subscriptions: usize,
    /// Messages published in the latency run.
    pub published: u64,
    /// Requests the receiver got and matched to a publish.
    pub requests: u64,
    /// Deliveries the alerts fanned out into (alerts × subscriptions).
    pub deliveries: i64,
    /// Deliveries still pending when the run ended (the engine fell behind).
    pub pending_at_end: i64,
    /// Median latency publish → webhook request, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// The slow receiver's answer time, ms.
    pub slow_ms: u64,
    /// Deliveries per second to it with concurrency 1.
    pub slow_rate_sequential: f64,
    /// The concurrency of the second slow run.
    pub slow_concurrency: usize,
    /// Deliveries per second to it with that concurrency.
    pub slow_rate_concurrent: f64,
}

/// Messages of the warm-up before the latency run.
const WARM_UP: u64 = 300;

#[derive(Default)]
struct Seen {
    latencies: Vec<f64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The in-process receiver: `/h/…` records latencies, `/slow` answers after `slow`.
async fn receiver(
    sent: Sent,
    seen: Arc<Mutex<Seen>>,
    slow_count: Arc<AtomicU64>,
    slow: Duration,
) -> Result<u16, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::io("binding the webhook receiver"))?;
    let port = listener
        .local_addr()
        .map_err(BenchError::io("receiver address"))?
        .port();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let (sent, seen, slow_count) = (sent.clone(), seen.clone(), slow_count.clone());
        async move {
            let at = Instant::now();
            if uri.path() == "/slow" {
                tokio::time::sleep(slow).await;
                slow_count.fetch_add(1, Ordering::Relaxed);
                return StatusCode::OK;
            }
            let msg_id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["msg_id"].as_str().map(str::to_string));
            let t0 = msg_id.and_then(|m| lock(&sent).get(&m).copied());
            if let Some(t0) = t0 {
                lock(&seen).latencies.push((at - t0).as_secs_f64() * 1000.0);
            }
            StatusCode::OK
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(port)
}

/// Writes the bureau, the subscriptions (`name`, URL, options) and their secrets.
async fn subscribe(
    env: &BenchEnv,
    subs: &[(String, String, serde_json::Value)],
) -> Result<(), BenchError> {
    let db = env.db().await?;
    db.execute(
        "INSERT INTO broker_identities (username, kind, password_hash, all_counties)
         VALUES ('bench-city', 'bureau', 'x', true) ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let mut lines = String::new();
    for (name, url, options) in subs {
        db.execute(
            "INSERT INTO subscriptions (name, bureau, channel, target, options)
             VALUES ($1, 'bench-city', 'webhook', $2, $3)",
            &[name, url, options],
        )
        .await?;
        lines.push_str(&format!("{name} {{\"secret\":\"bench\"}}\n"));
    }
    let path = env.dir.join("subscription-secrets");
    let mut all = std::fs::read_to_string(&path).unwrap_or_default();
    all.push_str(&lines);
    std::fs::write(&path, all).map_err(BenchError::io("writing the secrets file"))?;
    Ok(())
}

/// Pending deliveries (of `name`, or all).
async fn pending(db: &tokio_postgres::Client, name: Option<&str>) -> Result<i64, BenchError> {
    Ok(db
        .query_one(
            "SELECT count(*) FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
             WHERE d.state = 'pending' AND ($1::text IS NULL OR s.name = $1)",
            &[&name],
        )
        .await?
        .get(0))
}

/// Runs the phase against a fresh soilmon.
pub async fn run(
    env: &BenchEnv,
    settings: &Settings,
    args: &BenchArgs,
) -> Result<DeliveriesResult, BenchError> {
    let mut gen = Generator::new(settings, args, "w")?;
    let gen = &mut gen;
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let slow_count = Arc::new(AtomicU64::new(0));
    let slow = Duration::from_millis(args.slow_ms);
    let port = receiver(sent.clone(), seen.clone(), slow_count.clone(), slow).await?;
    let hooks: Vec<_> = (0..args.subscriptions)
        .map(|i| {
            (
                format!("bench-hook-{i}"),
                format!("http://127.0.0.1:{port}/h/{i}"),
                serde_json::json!({}),
            )
        })
        .collect();
    let mut s = env.soilmon("deliveries").await?;
    let mut warm = Generator::new(settings, args, "v")?;
    let unused: Sent = Arc::new(Mutex::new(HashMap::new()));
    publish_paced(env, &mut warm, 50.0, WARM_UP, &unused).await?;
    settle(env, WARM_UP, warm.run_tag()).await?;
    subscribe(env, &hooks).await?;
    // The engine reads subscriptions every deliver.refresh_secs (2 s by default).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let db = env.db().await?;
    let total = (args.rate * args.latency_seconds).round() as u64;
    publish_paced(env, gen, args.rate, total, &sent).await?;
    settle(env, total, gen.run_tag()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while pending(&db, None).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pending_at_end = pending(&db, None).await?;
    let deliveries: i64 = db
        .query_one("SELECT count(*) FROM deliveries", &[])
        .await?
        .get(0);
    db.execute(
        "UPDATE subscriptions SET removed_at = now() WHERE name LIKE 'bench-hook-%'",
        &[],
    )
    .await?;
    db.execute(
        "UPDATE deliveries SET state = 'cancelled' WHERE state = 'pending'",
        &[],
    )
    .await?;
    let mut v = std::mem::take(&mut lock(&seen).latencies);
    v.sort_by(f64::total_cmp);

    let c = args.slow_concurrency;
    let mut gen = Generator::new(settings, args, "x")?;
    let sequential = slow_rate(env, &mut gen, &db, port, "bench-slow-1", 1, &slow_count).await?;
    let mut gen = Generator::new(settings, args, "y")?;
    let concurrent = slow_rate(env, &mut gen, &db, port, "bench-slow-c", c, &slow_count).await?;
    s.stop().await?;
    Ok(DeliveriesResult {
        subscriptions: args.subscriptions,
        published: total,
        requests: v.len() as u64,
        deliveries,
        pending_at_end,
        p50_ms: percentile(&v, 0.50),
        p99_ms: percentile(&v, 0.99),
        max_ms: v.last().copied().unwrap_or(0.0),
        slow_ms: args.slow_ms,
        slow_rate_sequential: sequential,
        slow_concurrency: c,
        slow_rate_concurrent: concurrent,
    })
}

/// Deliveries per second to the slow receiver for a subscription of `concurrency`: a
/// paused subscription collects the alerts of a burst of 4,000 messages, then is resumed
/// and timed until its queue is empty (at most 60 s).
async fn slow_rate(
    env: &BenchEnv,
    gen: &mut Generator,
    db: &tokio_postgres::Client,
    port: u16,
    name: &str,
    concurrency: usize,
    count: &AtomicU64,
) -> Result<f64, BenchError> {
    let options = serde_json::json!({ "concurrency": concurrency });
    let url = format!("http://127.0.0.1:{port}/slow");
    subscribe(env, &[(name.to_string(), url, options)]).await?;
    db.execute(
        "UPDATE subscriptions SET paused = true WHERE name = $1",
        &[&name],
    )
    .await?;
    let burst = 4_000;
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    publish_paced(env, gen, 2_000.0, burst, &sent).await?;
    settle(env, burst, gen.run_tag()).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let left: i64 = db
            .query_one(
                "SELECT count(*) FROM outbox WHERE fanned_out_at IS NULL
                 AND kind IN ('alert', 'incident_action')",
                &[],
            )
            .await?
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = pending(db, Some(name)).await?;
    let before = count.load(Ordering::Relaxed);
    db.execute(
        "UPDATE subscriptions SET paused = false WHERE name = $1",
        &[&name],
    )
    .await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    while pending(db, Some(name)).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = count.load(Ordering::Relaxed) - before;
    eprintln!(
        "bench: slow receiver, concurrency {concurrency}: {delivered} of {queued} delivered in {elapsed:.1} s"
    );
    db.execute(
        "UPDATE subscriptions SET removed_at = now() WHERE name = $1",
        &[&name],
    )
    .await?;
    Ok(delivered as f64 / elapsed.max(1e-9))
}
