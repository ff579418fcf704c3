//! Smoke tests of the shared test harness (`tests/common`): the real services it drives
//! (mosquitto, the shared PostgreSQL cluster, a private cluster) behave as the other
//! integration tests assume.

mod common;

use std::time::Duration;

use common::{publish_all, Broker, PrivateCluster, Subscriber, TestDb};

/// Publishes through a per-test broker and receives the messages on a subscriber; the broker
/// survives a stop/restart on the same port.
#[tokio::test]
async fn broker_delivers_and_restarts() -> anyhow::Result<()> {
    let mut broker = Broker::start().await?;
    let sub = Subscriber::start(broker.port, "smoke/#").await?;
    let msgs: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("smoke/{i}"), format!("payload {i}").into_bytes()))
        .collect();
    publish_all(broker.port, msgs.clone()).await?;
    let got = sub.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got, msgs, "broker log:\n{}", broker.log());
    drop(sub);

    let port = broker.port;
    broker.stop().await?;
    broker.restart().await?;
    assert_eq!(broker.port, port);
    let sub = Subscriber::start(broker.port, "after/restart").await?;
    publish_all(broker.port, vec![("after/restart".into(), b"x".to_vec())]).await?;
    let got = sub.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "broker log:\n{}", broker.log());
    Ok(())
}

/// QoS1 messages queued for an offline persistent session survive a broker stop/restart
/// (persistence is on and written at SIGTERM).
#[tokio::test]
async fn broker_persists_queued_messages_across_restart() -> anyhow::Result<()> {
    let mut broker = Broker::start().await?;
    let id = format!("persist-{}", common::random_suffix());
    Subscriber::start_persistent(broker.port, "persist/#", &id)
        .await?
        .disconnect()
        .await?;
    let msgs: Vec<(String, Vec<u8>)> = (0..2).map(|i| (format!("persist/{i}"), vec![i])).collect();
    publish_all(broker.port, msgs.clone()).await?;
    broker.restart().await?;
    let sub = Subscriber::start_persistent(broker.port, "persist/#", &id).await?;
    let got = sub.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got, msgs, "broker log:\n{}", broker.log());
    Ok(())
}

/// A 1 MB payload passes the broker and the test clients (max packet sizes raised).
#[tokio::test]
async fn broker_passes_one_megabyte_payload() -> anyhow::Result<()> {
    let broker = Broker::start().await?;
    let sub = Subscriber::start(broker.port, "big").await?;
    let payload = vec![b'a'; 1_000_000];
    publish_all(broker.port, vec![("big".into(), payload.clone())]).await?;
    let got = sub.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1, "broker log:\n{}", broker.log());
    assert_eq!(got[0].1.len(), payload.len());
    Ok(())
}

/// A fresh database on the shared cluster answers queries; TimescaleDB can be created in it
/// when the cluster has it.
#[tokio::test]
async fn test_db_on_shared_cluster() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    assert!(db.name.starts_with("t_"));
    let client = db.client().await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    if common::timescaledb_available(&client).await? {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
        let version: String = client
            .query_one(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'",
                &[],
            )
            .await?
            .get(0);
        eprintln!("timescaledb {version} created in {}", db.name);
    } else {
        eprintln!("timescaledb not available on the shared cluster: extension check skipped");
    }
    drop(client);
    db.drop_db().await?;
    Ok(())
}

/// A database frozen with `mark_template` can be cloned (also with TimescaleDB and its
/// background scheduler running on the shared cluster).
#[tokio::test]
async fn test_db_clones_a_template() -> anyhow::Result<()> {
    let tpl = TestDb::create().await?;
    {
        let client = tpl.client().await?;
        if common::timescaledb_available(&client).await? {
            client
                .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                .await?;
        }
        client
            .batch_execute("CREATE TABLE marker (id int); INSERT INTO marker VALUES (42)")
            .await?;
    }
    tpl.mark_template().await?;
    let (a, b) = tokio::try_join!(
        TestDb::create_from_template(&tpl.name),
        TestDb::create_from_template(&tpl.name)
    )?;
    for db in [&a, &b] {
        let id: i32 = db
            .client()
            .await?
            .query_one("SELECT id FROM marker", &[])
            .await?
            .get(0);
        assert_eq!(id, 42);
        db.drop_db().await?;
    }
    tpl.drop_db().await?;
    Ok(())
}

/// A private cluster can be stopped (connections fail) and resumed (connections work).
#[tokio::test]
async fn private_cluster_stops_and_resumes() -> anyhow::Result<()> {
    let cluster = PrivateCluster::start().await?;
    let client = cluster.client().await?;
    if cluster.timescaledb {
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            .await?;
    }
    cluster.stop().await?;
    assert!(
        client.simple_query("SELECT 1").await.is_err(),
        "old connection still works after stop"
    );
    assert!(
        cluster.client().await.is_err(),
        "connecting succeeded while the cluster is stopped"
    );
    cluster.resume().await?;
    let client = cluster.client().await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}
