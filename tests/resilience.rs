//! Crash and outage tests on real services.
//!
//! Both use the same stream: two points, Cd cycling through
//! clean, clean, screening, intervention, screening, clean × 5 (10 samples a cycle), so by
//! the rules every cycle makes exactly four alert events (opened, escalated, de-escalated,
//! cleared) and ends with the incident cleared. Losing a message loses events; storing one
//! twice or replaying it adds events: either breaks the counts below.

mod common;

use std::time::Duration;

use anyhow::Context as _;
use chrono::{TimeZone, Utc};
use common::pipeline::{sample, tail, Pipeline};
use common::{wait_until, PrivateCluster};

/// Cd values of one cycle for both test points (paddy pH 6.2: screening 0.4, intervention
/// 2.0; dry land pH 7.0: screening 0.3, intervention 3.0).
const CYCLE: [f64; 10] = [0.1, 0.1, 0.5, 3.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1];
const EVENTS_PER_CYCLE: i64 = 4;
const POINTS: [&str; 2] = ["441781-T-0001", "441702-T-0001"];

/// `n` messages (n a multiple of 20), alternating between the two points, sampled a minute
/// apart, each with Cd and Pb.
fn stream(n: usize, station: &str) -> Vec<(String, Vec<u8>)> {
    let t0 = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    (0..n)
        .map(|i| {
            let point = POINTS[i % 2];
            let cd = CYCLE[(i / 2) % CYCLE.len()];
            let at = (t0 + chrono::Duration::minutes(i as i64)).to_rfc3339();
            sample(
                station,
                &format!("{station}-{i:06}"),
                point,
                &at,
                &[("Cd", cd), ("Pb", 20.0)],
            )
        })
        .collect()
}

/// Waits until all `n` messages are stored and their alerts published, then checks
/// exactly-once storage and the incident outcome.
async fn drained_exactly_once(p: &Pipeline, n: i64) -> anyhow::Result<()> {
    p.wait_count("SELECT count(*) FROM samples", n, Duration::from_secs(120))
        .await?;
    p.wait_count(
        "SELECT count(*) FROM outbox o WHERE NOT EXISTS (SELECT 1 FROM outbox_pending q WHERE q.id = o.id)",
        (n / 10) * EVENTS_PER_CYCLE,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(p.count("SELECT count(*) FROM samples").await?, n);
    assert_eq!(p.count("SELECT count(*) FROM readings_full").await?, 2 * n);
    assert_eq!(
        p.count(
            "SELECT count(*) FROM (SELECT DISTINCT source_id, msg_id, metal FROM readings_full) d"
        )
        .await?,
        2 * n
    );
    let cycles = n / 10;
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE kind = 'alert'")
            .await?,
        cycles * EVENTS_PER_CYCLE,
        "one event per state change, none lost or repeated"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM incidents WHERE state = 'cleared'")
            .await?,
        cycles
    );
    assert_eq!(
        p.count("SELECT count(*) FROM incidents WHERE state = 'open'")
            .await?,
        0
    );
    assert_eq!(p.count("SELECT count(*) FROM quarantine").await?, 0);
    Ok(())
}

/// 10,000 messages queued, the service killed with SIGKILL while draining them, restarted:
/// every reading stored exactly once, every incident state correct, every alert published.
#[tokio::test]
async fn kill_9_mid_stream_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    const N: usize = 10_000;
    let mut p = Pipeline::start(&[("SOILMON__INGEST__BATCH_MAX", "100")]).await?;
    // Queue the whole stream while the service is down (persistent session).
    p.soilmon.terminate().await?;
    p.publish(stream(N, "crash")).await?;
    p.soilmon.start().await?;
    wait_until("first readings stored", Duration::from_secs(60), || async {
        Ok(p.count("SELECT count(*) FROM readings_full").await? > 0)
    })
    .await
    .with_context(|| format!("soilmon log:\n{}", tail(&p.soilmon.log(), 4000)))?;
    p.soilmon.kill9()?;
    let at_kill = p.count("SELECT count(*) FROM samples").await?;
    assert!(
        at_kill < N as i64,
        "the kill must land mid-stream (stored {at_kill})"
    );

    p.soilmon.start().await?;
    drained_exactly_once(&p, N as i64).await?;
    Ok(())
}

/// `ingest.inflight_window` and `ingest.batch_max` of the outage test: small enough that the
/// backlog of the outage (3,000 messages) and the broker's own limit on unacked messages per
/// client (`max_inflight_messages 1000`) are both far above what soilmon may hold.
const WINDOW: usize = 100;
const BATCH_MAX: usize = 50;
/// The most messages the collector may hold unacked: the channel (`inflight_window`), the one
/// the poll task is handing over, the batch being gathered, and the three batches in the
/// database or waiting to be retried (`LANES` in `src/ingest/collector.rs`).
const HOLD_MAX: usize = WINDOW + 1 + (3 + 1) * BATCH_MAX;

/// PostgreSQL stopped for 20 s while messages keep arriving: no acks meanwhile (killed
/// during the outage, soilmon's session still holds every message of it), the messages held
/// bounded by the in-flight window, and after it returns everything is stored exactly once.
#[tokio::test]
async fn database_outage_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    const N: usize = 4_000;
    let cluster = PrivateCluster::start().await?;
    let (window, batch_max) = (WINDOW.to_string(), BATCH_MAX.to_string());
    let env = [
        ("SOILMON__INGEST__INFLIGHT_WINDOW", window.as_str()),
        ("SOILMON__INGEST__BATCH_MAX", batch_max.as_str()),
    ];
    let mut p = Pipeline::start_on(cluster.url.clone(), None, &env).await?;
    let msgs = stream(N, "outage");
    let (first, rest) = msgs.split_at(N / 4);
    p.publish(first.to_vec()).await?;
    p.wait_count(
        "SELECT count(*) FROM samples",
        (N / 4) as i64,
        Duration::from_secs(60),
    )
    .await?;

    cluster.stop().await?;
    p.publish(rest.to_vec()).await?;
    // The outage lasts 20 s; the service must stay up through it.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        p.soilmon.is_running(),
        "log:\n{}",
        tail(&p.soilmon.log(), 4000)
    );
    let log = p.soilmon.log();
    assert!(
        log.contains("batch not committed"),
        "the outage was seen by the writer"
    );
    let hwm_kb = peak_rss_kb(p.soilmon.pid().unwrap_or(0));
    // Bounded by the window: the backlog filled it, and soilmon took no more from the broker.
    let held = p.soilmon.metric("soilmon_ingest_inflight_max").await? as usize;
    assert!(
        held > WINDOW && held <= HOLD_MAX,
        "at most {HOLD_MAX} messages held unacked during the outage, the window full: {held}"
    );

    // No acks while the database is down: killed now, soilmon leaves every message of the
    // outage in its session, so a bare client resuming it gets each of them again (and
    // none of the messages committed before the outage).
    p.soilmon.kill9()?;
    let redelivered = common::resume_session(p.broker.port, &p.soilmon.collector_client_id).await?;
    let mut got: Vec<&[u8]> = redelivered.iter().map(|(_, b)| b.as_slice()).collect();
    let mut want: Vec<&[u8]> = rest.iter().map(|(_, b)| b.as_slice()).collect();
    got.sort_unstable();
    got.dedup();
    want.sort_unstable();
    assert_eq!(
        got.len(),
        want.len(),
        "messages of the outage left unacked in the session"
    );
    assert!(
        got == want,
        "exactly the messages of the outage were redelivered"
    );

    // The bare client acked them: hand them to the restarted service again.
    cluster.resume().await?;
    p.soilmon.start().await?;
    p.publish(redelivered).await?;
    drained_exactly_once(&p, N as i64).await?;
    // Bounded: the in-flight window holds at most ingest.inflight_window small messages.
    assert!(
        hwm_kb > 0 && hwm_kb < 200 * 1024,
        "peak RSS {hwm_kb} kB during the outage"
    );
    p.soilmon.terminate().await?;
    Ok(())
}

/// VmHWM (peak resident set) of a process, in kB; 0 if unreadable.
fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
