//! Cluster-mode harness: the topology `deploy/cluster/cluster.sh up` runs on loopback (3
//! RabbitMQ nodes, 3 etcd, 3 PostgreSQL under Patroni), found through the variables
//! `cluster.sh env` prints, and what one scenario needs on it: its own database, its own
//! queue names and topic prefix (so scenarios never see each other's messages), N soilmon
//! collectors consuming over AMQP, a station publishing MQTT QoS1 through the nodes'
//! MQTT listeners and retrying what was not confirmed, and the node kills. The nodes' TLS
//! listeners (AMQPS, MQTTS, the API over https) and their CA are in [`ClusterTls`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};
use serde_json::json;

use super::pipeline::TEST_POINTS;
use super::{pg_connect, random_suffix, repo_path, Soilmon};

/// The running cluster, from `cluster.sh env`.
pub struct Cluster {
    /// Comma-separated AMQP URLs (credentials inside).
    pub amqp_urls: String,
    /// The MQTT listener port of each node.
    pub mqtt_ports: Vec<u16>,
    /// MQTT username and password (soilmon's RabbitMQ user).
    pub mqtt_user: String,
    /// Its password.
    pub mqtt_password: String,
    /// Comma-separated management HTTP API base URLs of the nodes.
    pub api_urls: String,
    /// The API's administrator user and password (`soilmon broker sync` manages users with it).
    pub admin_user: String,
    /// Its password.
    pub admin_password: String,
    /// The multi-host database URL (database `soilmon`).
    db_url: String,
}

fn var(key: &str) -> Result<String> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => Ok(v),
        _ => bail!(
            "{key} is not set: start the cluster with `deploy/cluster/cluster.sh up` and \
             `eval \"$(deploy/cluster/cluster.sh env)\"` (deploy/local/test.sh does both)"
        ),
    }
}

/// The port of every URL of the comma-separated list in variable `key`.
fn ports(key: &str) -> Result<Vec<u16>> {
    var(key)?
        .split(',')
        .map(|u| {
            u.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| anyhow!("bad URL {u:?} in {key}"))
        })
        .collect()
}

/// The nodes' TLS listeners and the files of the cluster's throwaway CA (`cluster.sh env`).
pub struct ClusterTls {
    /// Comma-separated `amqps://` URLs (credentials inside).
    pub amqps_urls: String,
    /// The MQTTS listener port of each node.
    pub mqtts_ports: Vec<u16>,
    /// Comma-separated `https://` management API base URLs.
    pub api_urls: String,
    /// The CA certificate (PEM) of every listener's certificate.
    pub ca: PathBuf,
    /// A client certificate signed by that CA, and its key.
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
}

/// The MQTT listeners a client connects to: the plain ones, or the MQTTS ones with a TLS
/// client configuration.
pub struct Listeners {
    /// One port per node.
    pub ports: Vec<u16>,
    /// TLS (None: plain MQTT).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Listeners {
    fn options(&self, id: String, node: usize) -> MqttOptions {
        let port = self.ports[node % self.ports.len()];
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        if let Some(tls) = &self.tls {
            opts.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(tls.clone()),
            ));
        }
        opts
    }
}

impl Cluster {
    /// The cluster described by the environment; Err naming what to run when it is unset.
    pub fn from_env() -> Result<Cluster> {
        let mqtt_ports = ports("SOILMON_CLUSTER_MQTT_URLS")?;
        Ok(Cluster {
            amqp_urls: var("SOILMON_CLUSTER_AMQP_URLS")?,
            mqtt_ports,
            mqtt_user: var("SOILMON_CLUSTER_MQTT_USER")?,
            mqtt_password: var("SOILMON_CLUSTER_MQTT_PASSWORD")?,
            api_urls: var("SOILMON_CLUSTER_RABBITMQ_API")?,
            admin_user: var("SOILMON_CLUSTER_RABBITMQ_ADMIN_USER")?,
            admin_password: var("SOILMON_CLUSTER_RABBITMQ_ADMIN_PASSWORD")?,
            db_url: var("SOILMON_CLUSTER_DATABASE_URL")?,
        })
    }

    /// The TLS listeners and CA files (Err naming what to run when they are unset).
    pub fn tls(&self) -> Result<ClusterTls> {
        Ok(ClusterTls {
            amqps_urls: var("SOILMON_CLUSTER_AMQPS_URLS")?,
            mqtts_ports: ports("SOILMON_CLUSTER_MQTTS_URLS")?,
            api_urls: var("SOILMON_CLUSTER_RABBITMQ_API_TLS")?,
            ca: var("SOILMON_CLUSTER_TLS_CA")?.into(),
            client_cert: var("SOILMON_CLUSTER_TLS_CLIENT_CERT")?.into(),
            client_key: var("SOILMON_CLUSTER_TLS_CLIENT_KEY")?.into(),
        })
    }

    /// The plain MQTT listeners.
    pub fn mqtt_plain(&self) -> Listeners {
        Listeners {
            ports: self.mqtt_ports.clone(),
            tls: None,
        }
    }

    /// The multi-host URL of database `name`.
    pub fn db_url(&self, name: &str) -> String {
        self.db_url.replacen("/soilmon?", &format!("/{name}?"), 1)
    }

    /// Creates database `name` on the primary (retrying through a failover in progress).
    pub async fn create_db(&self, name: &str) -> Result<String> {
        let admin = self.db_url("postgres");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = async {
                let c = pg_connect(&admin).await?;
                c.batch_execute(&format!("CREATE DATABASE {name}")).await?;
                anyhow::Ok(())
            }
            .await;
            match r {
                Ok(()) => return Ok(self.db_url(name)),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    /// The `SOILMON__BROKER__…` settings that let `soilmon broker sync` manage RabbitMQ users.
    pub fn identity_envs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SOILMON__BROKER__RABBITMQ_API_URLS", self.api_urls.clone()),
            (
                "SOILMON__BROKER__RABBITMQ_ADMIN_USER",
                self.admin_user.clone(),
            ),
            (
                "SOILMON__BROKER__RABBITMQ_ADMIN_PASSWORD",
                self.admin_password.clone(),
            ),
        ]
    }

    /// `GET /api/PATH` on the first node's management API, as JSON.
    pub async fn api_get(&self, path: &str) -> Result<serde_json::Value> {
        let base = self.api_urls.split(',').next().context("no API URL")?;
        let resp = reqwest::Client::new()
            .get(format!("{base}/api/{path}"))
            .basic_auth(&self.admin_user, Some(&self.admin_password))
            .timeout(Duration::from_secs(15))
            .send()
            .await?;
        ensure!(resp.status().is_success(), "GET {path}: {}", resp.status());
        Ok(resp.json().await?)
    }

    /// Runs `deploy/cluster/cluster.sh ARGS` and returns its stdout (Err with stderr).
    pub async fn script(&self, args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("bash")
            .arg(repo_path("deploy/cluster/cluster.sh"))
            .args(args)
            .output()
            .await
            .context("running cluster.sh")?;
        ensure!(
            out.status.success(),
            "cluster.sh {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// One scenario's names on the shared cluster and its database.
pub struct Scenario {
    /// Topic prefix of this scenario (`t<rand>/soil/v1`).
    pub prefix: String,
    /// Its readings queue.
    pub queue: String,
    /// Its database URL.
    pub db_url: String,
    /// The `SOILMON__…` overrides every soilmon of the scenario gets.
    pub envs: Vec<(String, String)>,
}

impl Scenario {
    /// A fresh database (migrated, test points imported), queue names and prefix; runs
    /// `soilmon broker setup` (from node 1, so node 1 leads the new quorum queue).
    pub async fn start(cluster: &Cluster) -> Result<Scenario> {
        Scenario::start_with(cluster, &[]).await
    }

    /// [`Scenario::start`] with more `SOILMON__…` overrides (e.g. `amqp.shards`).
    pub async fn start_with(cluster: &Cluster, extra: &[(&str, &str)]) -> Result<Scenario> {
        Scenario::start_on(cluster, None, extra).await
    }

    /// [`Scenario::start_with`] on the database `db_url` (a fresh one on the cluster when
    /// `None`).
    pub async fn start_on(
        cluster: &Cluster,
        db_url: Option<String>,
        extra: &[(&str, &str)],
    ) -> Result<Scenario> {
        // A scenario that failed before bringing back the node it killed must not take the
        // next one down with it.
        if cluster.script(&["status"]).await.is_err() {
            cluster.script(&["up"]).await?;
        }
        let tag = format!("c{}", random_suffix());
        let db_url = match db_url {
            Some(u) => u,
            None => cluster.create_db(&tag).await?,
        };
        let prefix = format!("{tag}/soil/v1");
        let queue = format!("soilmon.{tag}.readings");
        let envs = vec![
            ("SOILMON__INGEST__SOURCE", "amqp".to_string()),
            ("SOILMON__AMQP__URLS", cluster.amqp_urls.clone()),
            ("SOILMON__AMQP__QUEUE", queue.clone()),
            (
                "SOILMON__AMQP__DEAD_LETTER_QUEUE",
                format!("soilmon.{tag}.dead"),
            ),
            (
                "SOILMON__AMQP__DEAD_LETTER_EXCHANGE",
                format!("soilmon.{tag}.dlx"),
            ),
            ("SOILMON__MQTT__TOPIC_PREFIX", prefix.clone()),
            ("SOILMON__INGEST__BATCH_MAX", "100".to_string()),
            ("SOILMON__INGEST__INFLIGHT_WINDOW", "200".to_string()),
            ("SOILMON__AMQP__PREFETCH", "300".to_string()),
            ("SOILMON__ALERTS__IDLE_POLL_MS", "200".to_string()),
            ("SOILMON__DATABASE__RETRY_MAX_MS", "1000".to_string()),
            ("SOILMON__MQTT__RECONNECT_MAX_MS", "1000".to_string()),
        ];
        let s = Scenario {
            prefix,
            queue,
            db_url,
            envs: envs
                .into_iter()
                .chain(extra.iter().map(|(k, v)| (*k, v.to_string())))
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        let admin = s.soilmon();
        let points = tempfile::Builder::new().suffix(".csv").tempfile()?;
        std::fs::write(points.path(), TEST_POINTS)?;
        let path = points.path().to_string_lossy().into_owned();
        for args in [
            vec!["migrate"],
            vec!["points", "import", &path],
            vec!["broker", "setup"],
        ] {
            let out = admin.command(&args).await?;
            ensure!(
                out.status.success(),
                "soilmon {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(s)
    }

    /// A soilmon configured for this scenario (not started).
    pub fn soilmon(&self) -> Soilmon {
        let mut s = Soilmon::new(&self.db_url, 1);
        for (k, v) in &self.envs {
            s.set_env(k, v);
        }
        s
    }

    /// Starts `n` collectors and waits until each consumes.
    pub async fn collectors(&self, n: usize) -> Result<Vec<Soilmon>> {
        let mut all = Vec::new();
        for _ in 0..n {
            let mut s = self.soilmon();
            s.start().await?;
            all.push(s);
        }
        for s in &all {
            wait_consuming(s, 1).await?;
        }
        Ok(all)
    }

    /// Messages and consumers of the readings queue(s), summed over the shards.
    pub async fn queue_stats(&self, cluster: &Cluster) -> Result<(u32, u32)> {
        let shards = self
            .envs
            .iter()
            .find(|(k, _)| k == "SOILMON__AMQP__SHARDS")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let cfg = soilmon::config::AmqpConfig {
            urls: cluster.amqp_urls.clone(),
            queue: self.queue.clone(),
            shards,
            ..Default::default()
        };
        let (conn, _) = soilmon::amqp::connect(&cfg, 1).await?;
        let ch = conn.create_channel().await?;
        let mut stats = (0, 0);
        for q in cfg.readings_queues() {
            let (m, c) = soilmon::amqp::queue_stats(&ch, &q).await?;
            stats = (stats.0 + m, stats.1 + c);
        }
        let _ = conn.close(200, "test").await;
        Ok(stats)
    }
}

/// Waits until `s` logged its `n`-th "ready: consuming".
pub async fn wait_consuming(s: &Soilmon, n: usize) -> Result<()> {
    super::wait_until("collector consuming", Duration::from_secs(60), || async {
        Ok(s.log().matches("ready: consuming").count() >= n)
    })
    .await
    .with_context(|| format!("log:\n{}", s.log()))
}

/// Message `i` of the test stream: station `st{i % 5}`, paddy point 441781-T-0001 (Cd
/// screening 0.4 mg/kg): three exceeding samples out of ten, so incidents open and clear.
pub fn stream_message(prefix: &str, i: usize) -> (String, String, Vec<u8>) {
    let station = format!("st{}", i % 5);
    let msg_id = format!("m{i:06}");
    let cd = if i % 10 < 3 { 0.6 } else { 0.2 };
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00+08:00").expect("fixed time")
        + chrono::Duration::minutes(i as i64);
    let body = json!({
        "msg_id": msg_id, "point_id": "441781-T-0001", "sampled_at": at.to_rfc3339(),
        "readings": [{"metal": "Cd", "value": cd, "unit": "mg/kg"},
                     {"metal": "Pb", "value": 20, "unit": "mg/kg"}],
    });
    let topic = format!("{prefix}/stations/{station}/readings");
    (
        topic,
        format!("{station}/{msg_id}"),
        body.to_string().into_bytes(),
    )
}

/// What the station side saw: the messages the broker confirmed (PUBACK).
#[derive(Default)]
pub struct Confirmed {
    /// `station/msg_id` of every confirmed message.
    pub keys: BTreeSet<String>,
    /// Connections that failed (each followed by a resend of the unconfirmed ones).
    pub reconnects: usize,
}

/// Message `i` of a stream under a topic prefix: (topic, `station/msg_id`, body).
pub type MessageFn = fn(&str, usize) -> (String, String, Vec<u8>);

/// What a station network publishes: `count` messages made by `message`, at `rate` per
/// second, under `prefix`.
pub struct StreamSpec {
    /// Topic prefix.
    pub prefix: String,
    /// Messages.
    pub count: usize,
    /// Messages per second.
    pub rate: u32,
    /// Message `i`.
    pub message: MessageFn,
}

/// A station network publishing `spec`, QoS1, through node `first_node`'s MQTT listener;
/// on a connection error it moves to the next node and sends again every message not
/// confirmed yet (same msg_id and content, as a station would). Bounded: gives up (Err)
/// after `limit`.
pub async fn publish_stream(
    cluster: &Cluster,
    spec: &StreamSpec,
    first_node: usize,
    limit: Duration,
    progress: Arc<Mutex<usize>>,
) -> Result<Confirmed> {
    let via = cluster.mqtt_plain();
    publish_stream_via(cluster, &via, spec, first_node, limit, progress).await
}

/// [`publish_stream`] through the listeners `via` (e.g. MQTTS).
pub async fn publish_stream_via(
    cluster: &Cluster,
    via: &Listeners,
    spec: &StreamSpec,
    first_node: usize,
    limit: Duration,
    progress: Arc<Mutex<usize>>,
) -> Result<Confirmed> {
    let (prefix, count, rate) = (spec.prefix.as_str(), spec.count, spec.rate);
    let deadline = Instant::now() + limit;
    let mut confirmed = Confirmed::default();
    let mut node = first_node;
    let mut next = 0usize; // next fresh message
    let mut resend: VecDeque<usize> = VecDeque::new();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    while next < count || !resend.is_empty() {
        ensure!(
            Instant::now() < deadline,
            "stream not confirmed within {limit:?}"
        );
        let mut opts = via.options(format!("station-{}", random_suffix()), node);
        opts.set_credentials(&cluster.mqtt_user, &cluster.mqtt_password)
            .set_keep_alive(Duration::from_secs(10))
            .set_clean_session(true);
        let (client, mut el) = AsyncClient::new(opts, 1000);
        // Sent in order, waiting for their packet id; then by packet id until PUBACK.
        let mut sent: VecDeque<usize> = VecDeque::new();
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        let mut tick = tokio::time::interval(gap);
        let failed = loop {
            if next >= count && resend.is_empty() && sent.is_empty() && by_pkid.is_empty() {
                break false;
            }
            if Instant::now() > deadline {
                break true;
            }
            tokio::select! {
                _ = tick.tick(), if (next < count || !resend.is_empty()) && by_pkid.len() < 500 => {
                    let i = match resend.pop_front() {
                        Some(i) => i,
                        None => { next += 1; next - 1 }
                    };
                    let (topic, _, body) = (spec.message)(prefix, i);
                    if client.try_publish(topic, QoS::AtLeastOnce, false, body).is_err() {
                        resend.push_front(i);
                        break true;
                    }
                    sent.push_back(i);
                }
                ev = el.poll() => match ev {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(i) = sent.pop_front() { by_pkid.insert(pkid, i); }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(a))) => {
                        if let Some(i) = by_pkid.remove(&a.pkid) {
                            confirmed.keys.insert((spec.message)(prefix, i).1);
                            *progress.lock().unwrap() += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break true,
                },
            }
        };
        if failed {
            // Everything not confirmed goes again, in order, on the next node.
            let mut again: Vec<usize> = by_pkid.into_values().chain(sent).collect();
            again.sort_unstable();
            for i in again.into_iter().rev() {
                resend.push_front(i);
            }
            confirmed.reconnects += 1;
            node += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            let _ = client.try_disconnect();
        }
    }
    Ok(confirmed)
}

/// An MQTT subscriber (soilmon's RabbitMQ user) on node `node` collecting the `event_id` of
/// every alert published under `prefix`; resubscribes after a reconnect.
pub struct AlertWatch {
    /// Event ids received (each counted once).
    pub events: Arc<Mutex<BTreeSet<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AlertWatch {
    /// Subscribes and returns once the broker granted the subscription.
    pub async fn start(cluster: &Cluster, node: usize, prefix: &str) -> Result<AlertWatch> {
        let port = cluster.mqtt_ports[node];
        let mut opts = MqttOptions::new(format!("bureau-{}", random_suffix()), "127.0.0.1", port);
        opts.set_credentials(&cluster.mqtt_user, &cluster.mqtt_password)
            .set_keep_alive(Duration::from_secs(10));
        let (client, mut el) = AsyncClient::new(opts, 16);
        let filter = format!("{prefix}/alerts/#");
        let events = Arc::new(Mutex::new(BTreeSet::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let ev = events.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        let _ = client.try_subscribe(filter.clone(), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&p.payload).unwrap_or_default();
                        if let Some(id) = v["event_id"].as_str() {
                            ev.lock().unwrap().insert(id.to_string());
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(20), ready_rx)
            .await
            .map_err(|_| anyhow!("no SUBACK from node {node} within 20 s"))??;
        Ok(AlertWatch { events, task })
    }
}

impl Drop for AlertWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `event_id` of every alert in the outbox.
pub async fn alert_event_ids(db_url: &str) -> Result<BTreeSet<String>> {
    let c = pg_connect(db_url).await?;
    Ok(c.query(
        "SELECT event_id::text FROM outbox WHERE kind = 'alert'",
        &[],
    )
    .await?
    .iter()
    .map(|r| r.get::<_, String>(0))
    .collect())
}

/// The database's view after a run: stored messages, readings, unpublished outbox rows.
pub struct Stored {
    /// `station/msg_id` of every stored message.
    pub keys: BTreeSet<String>,
    /// Readings rows.
    pub readings: i64,
    /// Readings rows that share (station, msg_id, metal) with another.
    pub duplicate_readings: i64,
    /// Outbox rows not yet published.
    pub unpublished: i64,
    /// Alert events in the outbox.
    pub alerts: i64,
}

/// Reads [`Stored`] from the scenario's database.
pub async fn stored(db_url: &str) -> Result<Stored> {
    let c = pg_connect(db_url).await?;
    let keys = c
        .query("SELECT o.source_id || '/' || s.msg_id FROM samples s JOIN sources o USING (source_key) WHERE o.source = 'station'", &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let one = |sql: &'static str| {
        let c = &c;
        async move { anyhow::Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0)) }
    };
    Ok(Stored {
        keys,
        readings: one("SELECT count(*) FROM readings_full").await?,
        duplicate_readings: one(
            "SELECT count(*) FROM (SELECT 1 FROM readings_full GROUP BY source_id, msg_id, metal \
             HAVING count(*) > 1) d",
        )
        .await?,
        unpublished: one("SELECT count(*) FROM outbox_pending").await?,
        alerts: one("SELECT count(*) FROM outbox WHERE kind = 'alert'").await?,
    })
}

/// Publishes one message QoS1 through node `node` and waits for its PUBACK.
pub async fn publish_raw(cluster: &Cluster, node: usize, topic: &str, body: &[u8]) -> Result<()> {
    let port = cluster.mqtt_ports[node];
    let mut opts = MqttOptions::new(format!("raw-{}", random_suffix()), "127.0.0.1", port);
    opts.set_credentials(&cluster.mqtt_user, &cluster.mqtt_password);
    let (client, mut el) = AsyncClient::new(opts, 4);
    client
        .try_publish(topic, QoS::AtLeastOnce, false, body.to_vec())
        .context("queueing PUBLISH")?;
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(anyhow!("publishing to node {node}: {e}")),
            }
        }
    })
    .await
    .map_err(|_| anyhow!("no PUBACK from node {node} within 20 s"))?
}
