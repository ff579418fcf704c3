//! soilmon end to end: drain the backlog queued for its persistent session while it was
//! stopped.
//!
//! Completion is "every message committed": the last message of the backlog is looked up by
//! its primary key every 20 ms (a cheap probe: counting a growing table that often would
//! itself load the database under test); once it is there, `messages` must hold N rows (else
//! polling goes on) and `readings` exactly N × 8. soilmon acks a
//! message right after the commit that stored it; that every message was **acked** is
//! verified afterwards: soilmon is stopped with SIGTERM, and a bare client resuming its
//! persistent session must receive no redelivery within 3 s.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
use tokio::time::Instant;

use crate::limits::disconnect;
use crate::report::{DrainResult, Throughput};
use crate::services::BenchEnv;
use crate::BenchError;

async fn count(db: &tokio_postgres::Client, table: &str) -> Result<u64, BenchError> {
    let n: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    Ok(n.max(0) as u64)
}

/// Starts soilmon on the queued backlog of `n` messages (the last one published being
/// `last_msg_id` of station `last_station`) and times it to the last commit.
pub async fn run(
    env: &BenchEnv,
    n: u64,
    last_station: &str,
    last_msg_id: &str,
) -> Result<DrainResult, BenchError> {
    let db = env.db().await?;
    let probe = db
        .prepare(
            "SELECT 1 FROM samples s JOIN sources so ON so.source_key = s.source_key
             WHERE so.source = 'station' AND so.source_id = $1 AND s.msg_id = $2",
        )
        .await?;
    let before = count(&db, "samples").await?;
    let readings_before = count(&db, "readings").await?;
    let mut s = env.soilmon("drain").await?;
    let limit = Duration::from_secs(120 + n / 200);
    loop {
        let last_there = !db
            .query(&probe, &[&last_station, &last_msg_id])
            .await?
            .is_empty();
        let stored = if last_there {
            count(&db, "samples").await? - before
        } else {
            0
        };
        if stored >= n {
            break;
        }
        if s.spawned.elapsed() > limit {
            return Err(BenchError::Check(format!(
                "drain: only {stored} of {n} messages stored after {limit:?}; log {}",
                s.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = s.spawned.elapsed();
    let resources = s.resources();
    let startup = s.ready_after;
    s.stop().await?;
    let messages = count(&db, "samples").await? - before;
    let readings = count(&db, "readings").await? - readings_before;
    if messages != n || readings != n * 8 {
        return Err(BenchError::Check(format!(
            "drain: {messages} messages and {readings} readings stored, expected {n} and {}",
            n * 8
        )));
    }
    let redelivered = redeliveries(env.broker.port, &env.collector_id()).await?;
    Ok(DrainResult {
        messages: n,
        readings: Throughput::new(readings, elapsed),
        messages_per_second: n as f64 / elapsed.as_secs_f64().max(1e-9),
        startup_seconds: startup.as_secs_f64(),
        redelivered_after_stop: redelivered,
        resources,
    })
}

/// Resumes the (stopped) collector's persistent session and counts what the broker still
/// delivers within 3 s of the CONNACK: the messages that were never acked. Each is acked
/// (they are stored: the idempotent writer would absorb them anyway).
pub async fn redeliveries(port: u16, client_id: &str) -> Result<u64, BenchError> {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 22, 1 << 22);
    let (client, mut el) = AsyncClient::new(opts, 1024);
    let mut got = 0u64;
    let mut until: Option<Instant> = None;
    let hard = Instant::now() + Duration::from_secs(30);
    loop {
        let deadline = until.unwrap_or(hard);
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => return Err(BenchError::MqttConnection(e.to_string())),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                until = Some(Instant::now() + Duration::from_secs(3));
            }
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => got += 1,
            Ok(Ok(_)) => {}
        }
    }
    disconnect(&client, &mut el).await;
    Ok(got)
}
