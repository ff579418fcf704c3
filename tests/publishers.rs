//! N instances on one database publish the outbox: two `soilmon run` processes drain the same
//! outbox while rows keep arriving. Rounds take the outbox lock (a transaction-level advisory
//! lock), so no event is published by both at once, and each alert topic's events arrive in
//! the order they were written; when one instance is SIGKILLed the other takes over and
//! every event still arrives, in order per topic (counting first arrivals: a round cut short
//! by the kill is published again, at least once).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{ensure, Result};
use common::{wait_until, Broker, Soilmon, Subscriber, TestDb};
use serde_json::{json, Value};

const TOPICS: usize = 10;

/// Inserts `n` alert rows starting at sequence `from`, `chunk` per transaction, spread over
/// [`TOPICS`] topics (each row's `seq` counts per topic).
async fn insert_events(db: &tokio_postgres::Client, from: usize, n: usize) -> Result<()> {
    for start in (from..from + n).step_by(50) {
        let mut sql = String::from("INSERT INTO outbox (event_id, kind, topic, payload) VALUES ");
        let mut rows = Vec::new();
        for i in start..(start + 50).min(from + n) {
            let topic = format!("soil/v1/alerts/441781/P-{}/Cd", i % TOPICS);
            let payload = json!({"event_id": format!("e{i:06}"), "seq": i / TOPICS});
            rows.push(format!(
                "(gen_random_uuid(), 'alert', '{topic}', '{payload}'::jsonb)"
            ));
        }
        sql.push_str(&rows.join(", "));
        db.batch_execute(&sql).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Per event id, how often it arrived; per topic, the `seq` of first arrivals in order.
fn arrivals(got: &[(String, Vec<u8>)]) -> (HashMap<String, usize>, BTreeMap<String, Vec<u64>>) {
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (topic, payload) in got {
        let v: Value = serde_json::from_slice(payload).unwrap_or_default();
        let id = v["event_id"].as_str().unwrap_or_default().to_string();
        let n = times.entry(id).or_default();
        *n += 1;
        if *n == 1 {
            order
                .entry(topic.clone())
                .or_default()
                .push(v["seq"].as_u64().unwrap_or(u64::MAX));
        }
    }
    (times, order)
}

fn in_order(order: &BTreeMap<String, Vec<u64>>) -> Result<()> {
    for (topic, seqs) in order {
        ensure!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "events of {topic} arrived out of order: {seqs:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_publishers_never_publish_an_event_twice_and_keep_topic_order() -> Result<()> {
    let db = TestDb::create().await?;
    let broker = Broker::start().await?;
    let mut a = Soilmon::new(&db.url, broker.port).env("SOILMON__ALERTS__IDLE_POLL_MS", "50");
    let mut b = Soilmon::new(&db.url, broker.port).env("SOILMON__ALERTS__IDLE_POLL_MS", "50");
    let out = a.command(&["migrate"]).await?;
    ensure!(out.status.success(), "migrate failed");
    let sub = Subscriber::start(broker.port, "soil/v1/alerts/#").await?;
    a.start().await?;
    b.start().await?;
    let client = db.client().await?;

    // Both running: every event exactly once, in order per topic.
    insert_events(&client, 0, 1000).await?;
    sub.wait_for(1000, Duration::from_secs(60)).await;
    wait_until("outbox published", Duration::from_secs(60), || async {
        let n: i64 = client
            .query_one("SELECT count(*) FROM outbox_pending", &[])
            .await?
            .get(0);
        Ok(n == 0)
    })
    .await?;
    let (times, order) = arrivals(&sub.received());
    ensure!(
        times.len() == 1000,
        "{} of 1000 events arrived",
        times.len()
    );
    let twice: Vec<_> = times.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(
        twice.is_empty(),
        "{} events published more than once, e.g. {:?}",
        twice.len(),
        twice.first()
    );
    in_order(&order)?;
    for s in [&a, &b] {
        ensure!(
            s.log().contains("alerts: publisher connected"),
            "log:\n{}",
            s.log()
        );
    }

    // One instance SIGKILLed while rows arrive: the other publishes everything, in order.
    let more = tokio::spawn({
        let url = db.url.clone();
        async move {
            let c = common::pg_connect(&url).await?;
            insert_events(&c, 1000, 1000).await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9()?;
    more.await??;
    wait_until("every event arrived", Duration::from_secs(60), || async {
        Ok(arrivals(&sub.received()).0.len() == 2000)
    })
    .await?;
    in_order(&arrivals(&sub.received()).1)?;
    Ok(())
}
