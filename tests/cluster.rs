//! Cluster mode on the topology of `deploy/cluster/cluster.sh` (3 RabbitMQ nodes, 3 etcd, 3
//! PostgreSQL under Patroni, all on loopback; `deploy/local/test.sh` starts it for the whole
//! suite and stops it afterwards, `deploy/cluster/test.sh` runs these tests alone): N soilmon
//! collectors consume one quorum queue over AMQP while a station network publishes MQTT QoS1
//! through the nodes' MQTT listeners, and processes and nodes are SIGKILLed mid-stream.
//!
//! Every scenario asserts the same outcome: every message the broker confirmed to the
//! station is stored exactly once, every alert is published (marked in the outbox and
//! received by a bureau subscriber), and the queue is empty at the end. The scenarios kill
//! shared nodes, so they run one at a time (a lock), each on its own database, queue and
//! topic prefix. Sizes: `SOILMON_CLUSTER_TEST_MESSAGES` (default 20,000, the size) at
//! `SOILMON_CLUSTER_TEST_RATE` per second (default 400); the order test's stream is
//! `SOILMON_CLUSTER_ORDER_MESSAGES` (default 20,000).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use common::cluster::{
    alert_event_ids, publish_stream, publish_stream_via, stored, stream_message, wait_consuming,
    AlertWatch, Cluster, ClusterTls, Confirmed, Listeners, Scenario, StreamSpec,
};
use common::{pg_connect, wait_until, Soilmon};

/// One scenario at a time: they kill shared nodes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn size() -> (usize, u32) {
    let get = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    (
        get("SOILMON_CLUSTER_TEST_MESSAGES", 20_000) as usize,
        get("SOILMON_CLUSTER_TEST_RATE", 400) as u32,
    )
}

/// Starts the stream in the background; returns its handle and its progress counter.
fn stream(
    cluster: Arc<Cluster>,
    prefix: String,
    first_node: usize,
) -> (
    tokio::task::JoinHandle<Result<Confirmed>>,
    Arc<Mutex<usize>>,
) {
    let (count, rate) = size();
    let progress = Arc::new(Mutex::new(0usize));
    let p = progress.clone();
    let limit = Duration::from_secs(count as u64 / u64::from(rate.max(1)) + 240);
    let spec = StreamSpec {
        prefix,
        count,
        rate,
        message: stream_message,
    };
    let task =
        tokio::spawn(async move { publish_stream(&cluster, &spec, first_node, limit, p).await });
    (task, progress)
}

/// Waits until `progress` reaches `n` confirmed messages.
async fn reached(progress: &Arc<Mutex<usize>>, n: usize) -> Result<()> {
    wait_until("stream progress", Duration::from_secs(300), || async {
        Ok(*progress.lock().unwrap() >= n)
    })
    .await
}

/// SIGKILLs a collector, starts it again and waits until it consumes.
async fn kill_and_restart(c: &mut Soilmon) -> Result<()> {
    c.kill9()?;
    c.start().await?;
    let starts = c.log().matches("===== harness: start").count();
    wait_consuming(c, starts).await
}

/// The end state every scenario must reach: each confirmed message stored exactly once,
/// the outbox published, every alert received by the bureau, the queue empty.
async fn settles(
    cluster: &Cluster,
    s: &Scenario,
    confirmed: &Confirmed,
    watch: &AlertWatch,
    collectors: &[Soilmon],
    readings_per_message: i64,
) -> Result<()> {
    let logs = || {
        collectors
            .iter()
            .map(|c| c.log())
            .collect::<Vec<_>>()
            .join("\n=====\n")
    };
    wait_until(
        "every confirmed message stored",
        Duration::from_secs(180),
        || async {
            let st = stored(&s.db_url).await?;
            Ok(confirmed.keys.iter().all(|k| st.keys.contains(k)))
        },
    )
    .await
    .with_context(logs)?;
    wait_until("outbox published", Duration::from_secs(120), || async {
        Ok(stored(&s.db_url).await?.unpublished == 0)
    })
    .await
    .with_context(logs)?;
    wait_until("queue drained", Duration::from_secs(60), || async {
        Ok(s.queue_stats(cluster).await?.0 == 0)
    })
    .await?;
    let st = stored(&s.db_url).await?;
    ensure!(
        st.duplicate_readings == 0,
        "{} readings stored twice",
        st.duplicate_readings
    );
    // Every message ends up confirmed (the station resends what was not), so the stored
    // set is exactly the confirmed one.
    ensure!(
        st.keys == confirmed.keys,
        "stored {} messages, confirmed {}",
        st.keys.len(),
        confirmed.keys.len()
    );
    // Every reading of every stored message: nothing half-stored, nothing twice.
    ensure!(
        st.readings == readings_per_message * st.keys.len() as i64,
        "{} readings for {} messages",
        st.readings,
        st.keys.len()
    );
    ensure!(st.alerts > 0, "the stream raised no alert");
    let expected = alert_event_ids(&s.db_url).await?;
    wait_until(
        "bureau received every alert",
        Duration::from_secs(60),
        || async { Ok(expected.is_subset(&watch.events.lock().unwrap())) },
    )
    .await?;
    println!(
        "settled: {} confirmed, {} stored, {} readings, {} alerts, {} station reconnects",
        confirmed.keys.len(),
        st.keys.len(),
        st.readings,
        st.alerts,
        confirmed.reconnects
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_sigkilled_ten_times_loses_and_doubles_nothing() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let s = Scenario::start(&cluster).await?;
    let mut collectors = s.collectors(3).await?;
    let watch = AlertWatch::start(&cluster, 2, &s.prefix).await?;
    let (task, progress) = stream(cluster.clone(), s.prefix.clone(), 0);
    let (count, _) = size();
    for k in 0..10 {
        reached(&progress, count * (k + 1) / 12).await?;
        let victim = rand::random::<usize>() % collectors.len();
        kill_and_restart(&mut collectors[victim]).await?;
    }
    let confirmed = task.await??;
    ensure!(confirmed.keys.len() == count, "not every message confirmed");
    settles(&cluster, &s, &confirmed, &watch, &collectors, 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quorum_queue_leader_node_sigkilled_mid_stream() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let s = Scenario::start(&cluster).await?;
    let collectors = s.collectors(3).await?;
    let leader = cluster.script(&["queue-leader", &s.queue]).await?;
    let n: usize = leader
        .trim_start_matches("rabbit")
        .split('@')
        .next()
        .and_then(|d| d.parse().ok())
        .context("leader name")?;
    // The station and the bureau use the two nodes that survive (node n has index n - 1).
    let watch = AlertWatch::start(&cluster, (n + 1) % 3, &s.prefix).await?;
    let (task, progress) = stream(cluster.clone(), s.prefix.clone(), n % 3);
    let (count, _) = size();
    reached(&progress, count / 3).await?;
    let killed = cluster.script(&["kill", &format!("rabbit{n}")]).await?;
    println!("SIGKILLed {killed}, the leader of {}", s.queue);
    let confirmed = task.await??;
    let result = settles(&cluster, &s, &confirmed, &watch, &collectors, 2).await;
    cluster.script(&["up"]).await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_primary_sigkilled_mid_stream_fails_over() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let s = Scenario::start(&cluster).await?;
    let collectors = s.collectors(3).await?;
    let watch = AlertWatch::start(&cluster, 1, &s.prefix).await?;
    let (task, progress) = stream(cluster.clone(), s.prefix.clone(), 0);
    let (count, _) = size();
    reached(&progress, count / 3).await?;
    let before = stored(&s.db_url).await?.keys.len();
    let killed = cluster.script(&["kill", "pg-primary"]).await?;
    let t_kill = Instant::now();
    // Kill → the first commit on the new primary: the stored count grows again.
    wait_until(
        "a commit after the failover",
        Duration::from_secs(180),
        || async {
            let c = pg_connect(&s.db_url).await?;
            let n: i64 = c
                .query_one("SELECT count(*) FROM samples s JOIN sources o USING (source_key) WHERE o.source = 'station'", &[])
                .await?
                .get(0);
            Ok(n as usize > before + 5)
        },
    )
    .await?;
    println!(
        "SIGKILLed the primary {killed}: first commits on the new primary {:.1} s after the kill",
        t_kill.elapsed().as_secs_f64()
    );
    let confirmed = task.await??;
    let result = settles(&cluster, &s, &confirmed, &watch, &collectors, 2).await;
    cluster.script(&["up"]).await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_check_refuses_unroutable_station_topics_and_poison_is_quarantined_once(
) -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let s = Scenario::start(&cluster).await?;
    // `broker setup` ran: every station topic of this prefix routes.
    let ok = s.soilmon().command(&["broker", "check"]).await?;
    ensure!(
        ok.status.success(),
        "broker check refused a set-up cluster: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The same cluster for stations publishing under a prefix nothing is bound for.
    let other = s
        .soilmon()
        .env("SOILMON__MQTT__TOPIC_PREFIX", "unbound/soil/v1")
        .command(&["broker", "check"])
        .await?;
    let err = String::from_utf8_lossy(&other.stderr);
    ensure!(
        !other.status.success() && err.contains("not ready") && err.contains("unbound.soil.v1"),
        "broker check accepted unroutable station topics: {err}"
    );
    let collectors = s.collectors(2).await?;
    let watch = AlertWatch::start(&cluster, 0, &s.prefix).await?;
    let topic = format!("{}/stations/st9/readings", s.prefix);
    common::cluster::publish_raw(&cluster, 1, &topic, b"{not json").await?;
    // A good message behind it: once it is stored, the poison one was dealt with.
    let (t, _, body) = common::cluster::stream_message(&s.prefix, 1);
    common::cluster::publish_raw(&cluster, 1, &t, &body).await?;
    wait_until(
        "the good message stored",
        Duration::from_secs(60),
        || async { Ok(stored(&s.db_url).await?.keys.len() == 1) },
    )
    .await?;
    wait_until("queue drained", Duration::from_secs(30), || async {
        Ok(s.queue_stats(&cluster).await?.0 == 0)
    })
    .await?;
    let c = pg_connect(&s.db_url).await?;
    let q: i64 = c
        .query_one(
            "SELECT count(*) FROM quarantine WHERE reason = 'malformed_json'",
            &[],
        )
        .await?
        .get(0);
    ensure!(q == 1, "poison message quarantined {q} times");
    let rejects: i64 = c
        .query_one("SELECT count(*) FROM outbox WHERE kind = 'reject'", &[])
        .await?
        .get(0);
    ensure!(rejects == 1, "{rejects} reject replies");
    drop(watch);
    drop(collectors);
    Ok(())
}

/// The points of the test registry, one per station of the order stream (a point is
/// reported by one station: the shards keep order per station).
const ORDER_POINTS: [&str; 4] = [
    "441781-T-0001",
    "441781-T-0002",
    "441781-T-0003",
    "441702-T-0001",
];

/// Message `i` of the order stream: station `o{i % 4}` reports point `ORDER_POINTS[i % 4]`
/// hourly; its Cd swings between clean, screening and intervention levels (incidents open,
/// escalate and clear), and every 13th sample of a station from the 130th on is late
/// (sampled 119.5 h before the one it follows).
fn order_message(prefix: &str, i: usize) -> (String, String, Vec<u8>) {
    let (k, n) = (i % 4, i / 4);
    let station = format!("o{k}");
    let msg_id = format!("m{i:06}");
    let cd = match (n * 7 + k * 3) % 10 {
        0..=5 => 0.1,
        6 | 7 => 25.0,
        8 => 50.0,
        _ => 0.5,
    };
    let base =
        chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00+08:00").expect("fixed time");
    // Late by more than a batch (`batch_max` 100): the incident logic orders a batch's
    // readings by sample time, so a sample only a few messages late is late or not
    // depending on whether it shares a batch with the newer one, which depends on timing
    // and not on the number of collectors (docs/cluster.md).
    let at = if n % 13 == 12 && n >= 130 {
        base + chrono::Duration::hours(n as i64 - 120) + chrono::Duration::minutes(30)
    } else {
        base + chrono::Duration::hours(n as i64)
    };
    let body = serde_json::json!({
        "msg_id": msg_id, "point_id": ORDER_POINTS[k], "sampled_at": at.to_rfc3339(),
        "readings": [{"metal": "Cd", "value": cd, "unit": "mg/kg"}],
    });
    (
        format!("{prefix}/stations/{station}/readings"),
        format!("{station}/{msg_id}"),
        body.to_string().into_bytes(),
    )
}

/// What the incident logic decided, with the run's own ids and prefix left out: the
/// incidents, the per-(point, metal) tracks, and the alert events per (point, metal) in
/// sample-time order. Two runs of the same stream must give the same lines. Not outbox
/// order: within a batch events are written in sample-time order, across batches in commit
/// order, so a late event and its neighbours swap places with the batch boundaries. A late
/// event's `newer_sampled_at` is left out too: it is the track's newest sample when the late
/// one's batch began, which also depends on where batches begin.
async fn history(db_url: &str, prefix: &str) -> Result<Vec<String>> {
    let c = pg_connect(db_url).await?;
    let mut lines = Vec::new();
    for sql in [
        "SELECT concat_ws(' ', 'incident', point_id, metal, state, level, opened_sampled_at, \
         updated_sampled_at, cleared_sampled_at) FROM incidents \
         ORDER BY point_id, metal, opened_sampled_at",
        "SELECT concat_ws(' ', 'track', point_id, metal, last_sampled_at, level, ok_streak, \
         incident_id IS NOT NULL) FROM incident_tracks ORDER BY point_id, metal",
        "SELECT concat_ws(' ', 'alert', topic, (payload::jsonb - 'event_id' - 'incident_id' - 'newer_sampled_at')::text) \
         FROM outbox WHERE kind = 'alert' \
         ORDER BY payload->>'point_id', payload->>'metal', payload->>'sampled_at', \
         payload->>'msg_id', payload->>'state'",
    ] {
        for r in c.query(sql, &[]).await? {
            lines.push(r.get::<_, String>(0).replace(prefix, "PREFIX"));
        }
    }
    Ok(lines)
}

/// Runs the order stream through `collectors` collectors of scenario `s`, SIGKILLing the
/// collectors in turn `kills` times mid-stream (so the shards change hands), and returns
/// what was confirmed once everything is stored and published.
async fn order_run(
    cluster: &Arc<Cluster>,
    s: &Scenario,
    collectors: usize,
    kills: usize,
    count: usize,
) -> Result<Confirmed> {
    let mut running = s.collectors(collectors).await?;
    let watch = AlertWatch::start(cluster, 1, &s.prefix).await?;
    let spec = StreamSpec {
        prefix: s.prefix.clone(),
        count,
        rate: size().1,
        message: order_message,
    };
    let progress = Arc::new(Mutex::new(0usize));
    let (c, p) = (cluster.clone(), progress.clone());
    let limit = Duration::from_secs(count as u64 / u64::from(spec.rate.max(1)) + 240);
    let task = tokio::spawn(async move { publish_stream(&c, &spec, 0, limit, p).await });
    for k in 0..kills {
        reached(&progress, count * (k + 1) / (kills + 1)).await?;
        let victim = k % running.len();
        kill_and_restart(&mut running[victim]).await?;
    }
    let confirmed = task.await??;
    ensure!(confirmed.keys.len() == count, "not every message confirmed");
    settles(cluster, s, &confirmed, &watch, &running, 1).await?;
    Ok(confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_and_three_sharded_collectors_decide_the_same_incidents() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let count = std::env::var("SOILMON_CLUSTER_ORDER_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize);
    // The reference: one collector on one queue sees the stream in the order it was sent.
    let one = Scenario::start(&cluster).await?;
    order_run(&cluster, &one, 1, 0, count).await?;
    // Three collectors on four shards, the active one SIGKILLed three times.
    let three = Scenario::start_with(&cluster, &[("SOILMON__AMQP__SHARDS", "4")]).await?;
    order_run(&cluster, &three, 3, 3, count).await?;
    let (a, b) = (
        history(&one.db_url, &one.prefix).await?,
        history(&three.db_url, &three.prefix).await?,
    );
    let count_of = |h: &[String], kind: &str| h.iter().filter(|l| l.starts_with(kind)).count();
    ensure!(
        count_of(&a, "incident ") > 10 && a.iter().any(|l| l.contains(" cleared ")),
        "the stream opened and cleared too few incidents to prove anything"
    );
    ensure!(
        a.iter().any(|l| l.contains("late_exceedance")),
        "the stream raised no late-sample event"
    );
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        anyhow::bail!(
            "one collector and three differ at line {i}:\n  one:   {:?}\n  three: {:?}",
            a.get(i),
            b.get(i)
        );
    }
    println!(
        "identical: {} incidents, {} tracks, {} alert events from {count} messages",
        count_of(&a, "incident "),
        count_of(&a, "track "),
        count_of(&a, "alert ")
    );
    Ok(())
}

/// `soilmon ARGS` for scenario `s`: Ok(stdout) on success, Err(stdout + stderr) otherwise.
async fn cli(s: &Scenario, args: &[&str]) -> Result<String> {
    let out = s.soilmon().command(args).await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "soilmon {args:?} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(text)
}

/// A station message under the scenario's prefix: (topic, body).
fn reading(prefix: &str, station: &str, msg_id: &str, point: &str, cd: f64) -> (String, Vec<u8>) {
    let (_, body) = common::pipeline::sample(
        station,
        msg_id,
        point,
        "2026-11-28T09:30:00+08:00",
        &[("Cd", cd)],
    );
    (format!("{prefix}/stations/{station}/readings"), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_identities_give_the_mosquitto_acl_guarantees() -> Result<()> {
    use common::secure::{options, password_from, publish_as, try_connect, AuthSubscriber};
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let envs = cluster.identity_envs();
    let extra: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Scenario::start_with(&cluster, &extra).await?;
    // Users are broker-wide: names unique to this scenario.
    let tag = s.prefix.split('/').next().context("prefix")?.to_string();
    let (st1, st2, bu1) = (format!("{tag}s1"), format!("{tag}s2"), format!("{tag}b1"));
    // An identity made before RabbitMQ hashes were stored is named, not skipped silently.
    let old = format!("{tag}old");
    pg_connect(&s.db_url)
        .await?
        .execute(
            "INSERT INTO broker_identities (username, kind, password_hash) VALUES ($1, 'station', 'x')",
            &[&old],
        )
        .await?;
    let mut secret = std::collections::HashMap::new();
    for st in [&st1, &st2] {
        let out = cli(&s, &["stations", "add", st]).await?;
        ensure!(out.contains("rabbitmq users synced"), "{out}");
        ensure!(
            out.contains("rotate to enable on RabbitMQ") && out.contains(&old),
            "{out}"
        );
        secret.insert(st.clone(), password_from(&out)?);
    }
    let out = cli(&s, &["bureaus", "add", &bu1, "--county", "441781"]).await?;
    secret.insert(bu1.clone(), password_from(&out)?);
    let user: serde_json::Value = cluster.api_get(&format!("users/{st1}")).await?;
    ensure!(
        user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
            && !user.to_string().contains(&secret[&st1]),
        "{user}"
    );
    let _collectors = s.collectors(1).await?;
    let port = cluster.mqtt_ports[0];
    let login = |name: &String| options(port, Some((name.as_str(), secret[name].as_str())), None);

    // st1 on st2's topic: RabbitMQ refuses the publish and closes the connection (no PUBACK).
    let forged = reading(&s.prefix, &st2, "forged-1", "441781-T-0001", 9.0);
    let refused = publish_as(login(&st1), vec![forged]).await;
    ensure!(
        refused.is_err(),
        "a publish to another station's topic was acknowledged"
    );
    // st1 on its own topic: stored.
    let own = reading(&s.prefix, &st1, "m-1", "441781-T-0001", 0.2);
    publish_as(login(&st1), vec![own]).await?;
    wait_until("st1/m-1 stored", Duration::from_secs(60), || async {
        Ok(stored(&s.db_url)
            .await?
            .keys
            .contains(&format!("{st1}/m-1")))
    })
    .await?;
    wait_until("queue drained", Duration::from_secs(30), || async {
        Ok(s.queue_stats(&cluster).await?.0 == 0)
    })
    .await?;
    let keys = stored(&s.db_url).await?.keys;
    ensure!(
        keys == std::collections::BTreeSet::from([format!("{st1}/m-1")]),
        "stored {keys:?}: the forged message reached the queue"
    );

    // The bureau: its county's alerts, never another county's (the subscription is refused).
    let alerts = |county: &str| format!("{}/alerts/{county}/#", s.prefix);
    let mine = AuthSubscriber::start(login(&bu1), &alerts("441781")).await?;
    ensure!(mine.granted, "the bureau's own county was refused");
    let other = AuthSubscriber::start(login(&bu1), &alerts("441702")).await;
    let wide = AuthSubscriber::start(login(&bu1), &format!("{}/alerts/#", s.prefix)).await;
    for (what, sub) in [("another county", &other), ("every county", &wide)] {
        if let Ok(sub) = sub {
            ensure!(
                !sub.granted,
                "the bureau's subscription to {what} was granted"
            );
        }
    }
    // Exceedances in both counties (Cd 0.5: paddy 441781 screening 0.4, dry land 441702 0.3).
    publish_as(
        login(&st1),
        vec![
            reading(&s.prefix, &st1, "a-1", "441781-T-0001", 0.5),
            reading(&s.prefix, &st1, "a-2", "441702-T-0001", 0.5),
        ],
    )
    .await?;
    let got = mine.wait_for(1, Duration::from_secs(60)).await;
    ensure!(
        got.len() == 1,
        "the bureau received {} alerts of its county",
        got.len()
    );
    ensure!(
        got[0]
            .0
            .starts_with(&format!("{}/alerts/441781/", s.prefix)),
        "{got:?}"
    );
    wait_until("both alerts published", Duration::from_secs(60), || async {
        Ok(stored(&s.db_url).await?.unpublished == 0)
    })
    .await?;
    for sub in [&other, &wide].into_iter().flatten() {
        ensure!(
            sub.wait_for(1, Duration::from_secs(2)).await.is_empty(),
            "another county's alert arrived"
        );
    }
    let all = mine.wait_for(2, Duration::from_secs(2)).await;
    ensure!(all.len() == 1, "{all:?}");

    // Revocation: the user is deleted, its open connection closed, new ones refused.
    let open =
        AuthSubscriber::start(login(&st2), &format!("{}/stations/{st2}/rejects", s.prefix)).await?;
    ensure!(open.granted, "st2 may read its own rejects");
    let out = cli(&s, &["stations", "revoke", &st2]).await?;
    ensure!(out.contains(&format!("1 deleted ({st2})")), "{out}");
    ensure!(
        try_connect(login(&st2)).await.is_err(),
        "revoked st2 connected"
    );
    wait_until(
        "st2's open connection closed",
        Duration::from_secs(30),
        || async { Ok(open.is_finished()) },
    )
    .await?;
    try_connect(login(&st1)).await?;
    // Rotation gives the old identity a RabbitMQ user.
    let out = cli(&s, &["stations", "rotate", &old]).await?;
    ensure!(!out.contains("rotate to enable"), "{out}");
    let pw = password_from(&out)?;
    try_connect(options(port, Some((old.as_str(), pw.as_str())), None)).await?;
    println!("rabbitmq identities: own topic stored, forged refused, county alerts only, revoked user gone");
    Ok(())
}

/// The advisory lock the test's COMMIT gate waits on.
const GATE: i64 = 4216;

/// Makes every COMMIT of a transaction that stored a new sample wait until the test releases
/// advisory lock [`GATE`]: a deferred constraint trigger runs inside COMMIT, so the client
/// sends COMMIT and sees no answer, as when a primary dies mid-COMMIT. A client that gave up
/// is noticed within 200 ms (`client_connection_check_interval`), and its transaction rolls
/// back: the retry is not blocked behind the abandoned one's row locks.
const COMMIT_GATE: &str = "
    CREATE FUNCTION test_commit_gate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_advisory_xact_lock_shared(4216); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER test_commit_gate AFTER INSERT ON samples
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_commit_gate();";

/// Readings queue counters from the management API: (ready, unacknowledged).
async fn queue_counts(cluster: &Cluster, queue: &str) -> Result<(i64, i64)> {
    let q = cluster.api_get(&format!("queues/%2F/{queue}")).await?;
    Ok((
        q["messages_ready"].as_i64().unwrap_or(-1),
        q["messages_unacknowledged"].as_i64().unwrap_or(-1),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_without_answer_is_given_up_not_acked_and_stored_once_later() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    // The single-node test PostgreSQL: the gate needs a trigger and a database setting.
    let db = common::TestDb::create().await?;
    let s = Scenario::start_on(
        &cluster,
        Some(db.url.clone()),
        &[("SOILMON__DATABASE__COMMIT_TIMEOUT_MS", "1500")],
    )
    .await?;
    let admin = db.client().await?;
    admin.batch_execute(COMMIT_GATE).await?;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET client_connection_check_interval = '200ms'",
            db.name
        ))
        .await?;
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&GATE])
        .await?;
    let collectors = s.collectors(1).await?;
    let n = 20usize;
    for i in 0..n {
        let (topic, _, body) = stream_message(&s.prefix, i);
        common::cluster::publish_raw(&cluster, 0, &topic, &body).await?;
    }
    // The collector gives up on the COMMIT, and on the retry's too: nothing acked meanwhile.
    wait_until("two COMMITs given up", Duration::from_secs(120), || async {
        Ok(collectors[0]
            .log()
            .matches("no answer to COMMIT within")
            .count()
            >= 2)
    })
    .await
    .with_context(|| collectors[0].log())?;
    wait_until(
        "the broker counts every message unacked",
        Duration::from_secs(60),
        || async { Ok(queue_counts(&cluster, &s.queue).await? == (0, n as i64)) },
    )
    .await
    .with_context(|| collectors[0].log())?;
    let st = stored(&s.db_url).await?;
    ensure!(
        st.keys.is_empty(),
        "{} messages visible while every COMMIT hangs",
        st.keys.len()
    );
    // Lifted: everything stored exactly once, everything acked.
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&GATE])
        .await?;
    wait_until("every message stored", Duration::from_secs(120), || async {
        Ok(stored(&s.db_url).await?.keys.len() == n)
    })
    .await
    .with_context(|| collectors[0].log())?;
    wait_until("every message acked", Duration::from_secs(60), || async {
        Ok(queue_counts(&cluster, &s.queue).await? == (0, 0))
    })
    .await?;
    let st = stored(&s.db_url).await?;
    ensure!(
        st.duplicate_readings == 0,
        "{} readings stored twice",
        st.duplicate_readings
    );
    ensure!(
        st.readings == 2 * n as i64,
        "{} readings for {n} messages",
        st.readings
    );
    let timeouts = collectors[0]
        .log()
        .matches("no answer to COMMIT within")
        .count();
    println!("{timeouts} COMMITs given up while the gate was closed; {n} messages stored once");
    drop(collectors);
    drop(admin);
    db.drop_db().await?;
    Ok(())
}

/// The `SOILMON__…` overrides of a soilmon that talks to the cluster over TLS only: AMQPS
/// URLs, the cluster's CA (the one file it trusts), its client certificate, and the
/// management API over https.
fn tls_envs(cluster: &Cluster, tls: &ClusterTls) -> Vec<(&'static str, String)> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut envs = cluster.identity_envs();
    envs.retain(|(k, _)| *k != "SOILMON__BROKER__RABBITMQ_API_URLS");
    envs.extend([
        ("SOILMON__BROKER__RABBITMQ_API_URLS", tls.api_urls.clone()),
        ("SOILMON__AMQP__URLS", tls.amqps_urls.clone()),
        ("SOILMON__AMQP__TLS_CA_FILE", path(&tls.ca)),
        ("SOILMON__AMQP__TLS_CERT_FILE", path(&tls.client_cert)),
        ("SOILMON__AMQP__TLS_KEY_FILE", path(&tls.client_key)),
    ]);
    envs
}

/// The broker's connections named `soilmon` (collectors and publishers), as (TLS?, the
/// client certificate's subject).
async fn soilmon_connections(cluster: &Cluster) -> Result<Vec<(bool, String)>> {
    let all = cluster.api_get("connections").await?;
    Ok(all
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|c| c["client_properties"]["connection_name"] == "soilmon")
        .map(|c| {
            (
                c["ssl"].as_bool().unwrap_or(false),
                c["peer_cert_subject"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_collector_stores_what_a_station_sent_and_a_wrong_ca_is_refused() -> Result<()> {
    use common::secure::{make_test_ca, options, try_connect};
    let _serial = SERIAL.lock().await;
    let cluster = Arc::new(Cluster::from_env()?);
    let tls = cluster.tls()?;
    let envs = tls_envs(&cluster, &tls);
    let extra: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // `broker setup` (in start_with) and `broker sync` over AMQPS and https.
    let s = Scenario::start_with(&cluster, &extra).await?;
    let out = cli(&s, &["broker", "sync"]).await?;
    ensure!(
        out.contains("synced through https://"),
        "broker sync: {out}"
    );
    let collectors = s.collectors(1).await?;
    // The broker's side: the collector's and the publisher's connections are TLS and
    // carry the client certificate (the management API refreshes its stats every 5 s).
    wait_until(
        "collector connections listed",
        Duration::from_secs(30),
        || async {
            let conns = soilmon_connections(&cluster).await?;
            Ok(conns.len() >= 2)
        },
    )
    .await?;
    let conns = soilmon_connections(&cluster).await?;
    ensure!(
        conns
            .iter()
            .all(|(ssl, subject)| *ssl && subject.contains("soilmon collector")),
        "every soilmon connection is TLS with the client certificate: {conns:?}"
    );

    // A station on the MQTTS listeners, trusting only the cluster's CA.
    let station_tls = soilmon::config::tls_client_config(&tls.ca).map_err(anyhow::Error::msg)?;
    let via = Listeners {
        ports: tls.mqtts_ports.clone(),
        tls: Some(station_tls),
    };
    let watch = AlertWatch::start(&cluster, 1, &s.prefix).await?;
    let (count, rate) = size();
    let count = count.min(500);
    let spec = StreamSpec {
        prefix: s.prefix.clone(),
        count,
        rate,
        message: stream_message,
    };
    let limit = Duration::from_secs(count as u64 / u64::from(rate.max(1)) + 120);
    let progress = Arc::new(Mutex::new(0usize));
    let confirmed = publish_stream_via(&cluster, &via, &spec, 0, limit, progress).await?;
    ensure!(confirmed.keys.len() == count, "not every message confirmed");
    ensure!(
        confirmed.reconnects == 0,
        "the MQTTS connection failed {} times",
        confirmed.reconnects
    );
    settles(&cluster, &s, &confirmed, &watch, &collectors, 2).await?;

    // Another CA: every node's certificate is refused, with the reason, and nothing is
    // tried in plain text (amqps:// URLs only; a plain one would be refused at load).
    let other = tempfile::tempdir()?;
    make_test_ca(other.path())?;
    let wrong_ca = other.path().join("ca.crt").to_string_lossy().into_owned();
    let mut wrong = s.soilmon();
    wrong.set_env("SOILMON__AMQP__TLS_CA_FILE", &wrong_ca);
    let out = wrong.command(&["broker", "check"]).await?;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        !out.status.success(),
        "broker check with another CA succeeded"
    );
    ensure!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "broker check does not say why: {err}"
    );
    wrong.start().await?;
    wait_until("refusal logged", Duration::from_secs(30), || async {
        Ok(wrong.log().contains("UnknownIssuer"))
    })
    .await
    .with_context(|| wrong.log())?;
    ensure!(
        !wrong.log().contains("ready: consuming"),
        "a collector that trusts another CA consumed: {}",
        wrong.log()
    );
    // A station trusting another CA does not get a CONNACK over MQTTS either.
    let wrong_tls = soilmon::config::tls_client_config(&other.path().join("ca.crt"))
        .map_err(anyhow::Error::msg)?;
    let creds = Some((cluster.mqtt_user.as_str(), cluster.mqtt_password.as_str()));
    let refused = try_connect(options(tls.mqtts_ports[0], creds, Some(wrong_tls))).await;
    ensure!(
        refused.is_err(),
        "MQTTS accepted a station trusting another CA"
    );
    // And only TLS connections ever reached the broker from this scenario.
    let conns = soilmon_connections(&cluster).await?;
    ensure!(
        conns.iter().all(|(ssl, _)| *ssl),
        "plain connections: {conns:?}"
    );
    let _ = wrong.terminate().await;
    Ok(())
}
