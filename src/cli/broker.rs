//! `soilmon broker sync|setup|check`, and the broker-file regeneration the identity commands
//! share.

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;

use soilmon::config::Settings;
use soilmon::store::identities::{self, IdentityKind};
use soilmon::{amqp, broker};

use super::{admin_connect, write_lines};

#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Bring the brokers in line with the database: write broker.password_file and
    /// broker.acl_file, then run broker.reload_command (Mosquitto); create, update and delete
    /// the station and bureau users and their permissions through broker.rabbitmq_api_urls
    /// (RabbitMQ). Either or both, as configured.
    Sync,
    /// Cluster mode: declare on RabbitMQ (amqp.urls) the readings quorum queue (or, with
    /// amqp.shards, its shard queues and their consistent-hash exchange) with its delivery
    /// limit and dead-letter exchange, the dead-letter queue, and the binding of the station
    /// readings topic (idempotent; fails on a queue declared with other arguments).
    Setup,
    /// Cluster mode: exit non-zero unless the readings queue exists and the readings topic of
    /// every active station (and of a station not yet registered) routes to a queue.
    Check,
}

/// Runs one `soilmon broker` command.
pub async fn dispatch(settings: &Settings, c: BrokerCommand) -> Result<()> {
    match c {
        BrokerCommand::Sync => {
            let client = admin_connect(settings).await?;
            broker_sync(settings, &client).await
        }
        BrokerCommand::Setup => setup(settings).await,
        BrokerCommand::Check => check(settings).await,
    }
}

/// `soilmon broker setup`.
async fn setup(settings: &Settings) -> Result<()> {
    let a = &settings.amqp;
    let (conn, node) = amqp::connect(a, 0).await?;
    let result = declare(settings, &conn, node).await;
    // Closed on every path, so lapin's I/O loop does not outlive the runtime.
    let _ = conn.close(200, "setup done").await;
    result
}

async fn declare(settings: &Settings, conn: &lapin::Connection, node: usize) -> Result<()> {
    let a = &settings.amqp;
    let ch = conn.create_channel().await?;
    let binding = amqp::readings_binding(&settings.mqtt);
    amqp::declare(&ch, a, &binding)
        .await
        .with_context(|| format!("declaring the topology on node {node}"))?;
    let route = if a.shards == 0 {
        format!("bound to {} with {binding}", a.exchange)
    } else {
        format!(
            "single active consumer each, fed by consistent-hash exchange {} bound to {} \
             with {binding}",
            a.hash_exchange(),
            a.exchange
        )
    };
    println!(
        "declared on node {node}: quorum queue(s) {} (x-delivery-limit {}, dead-letter \
         exchange {} -> quorum queue {}), {route}",
        a.readings_queues().join(", "),
        a.delivery_limit,
        a.dead_letter_exchange,
        a.dead_letter_queue
    );
    Ok(())
}

/// `soilmon broker check`: the queues exist, and every station topic routes.
async fn check(settings: &Settings) -> Result<()> {
    let (conn, node) = amqp::connect(&settings.amqp, 0).await?;
    let result = probe(settings, &conn, node).await;
    let _ = conn.close(200, "check done").await;
    result
}

async fn probe(settings: &Settings, conn: &lapin::Connection, node: usize) -> Result<()> {
    let a = &settings.amqp;
    let ch = conn.create_channel().await?;
    let (mut messages, mut consumers) = (0, 0);
    for q in a.readings_queues() {
        let (m, c) = amqp::queue_stats(&ch, &q)
            .await
            .with_context(|| format!("queue {q} (run `soilmon broker setup`)"))?;
        messages += m;
        consumers += c;
    }
    amqp::queue_stats(&ch, &a.dead_letter_queue)
        .await
        .with_context(|| format!("queue {} (run `soilmon broker setup`)", a.dead_letter_queue))?;
    let client = admin_connect(settings).await?;
    let mut stations: Vec<String> = identities::active(&client)
        .await?
        .into_iter()
        .filter(|i| i.kind == IdentityKind::Station)
        .map(|i| i.username)
        .collect();
    // A station not registered yet must route too (it is refused with a reason, not lost).
    stations.push(format!("unregistered-{}", std::process::id()));
    let keys: Vec<String> = stations
        .iter()
        .map(|s| amqp::station_key(&settings.mqtt, s))
        .collect();
    let lost = amqp::unroutable(&ch, &a.exchange, &keys).await?;
    println!(
        "node {node}: readings queue(s) {} hold {messages} messages, {consumers} consumers; \
         {} station topics probed",
        a.readings_queues().join(", "),
        keys.len()
    );
    if !lost.is_empty() {
        bail!(
            "not ready: {} of {} station topics route to no queue (a station publishing there \
             would be confirmed and its message dropped): {}",
            lost.len(),
            keys.len(),
            lost.join(", ")
        );
    }
    println!("ready: every station topic routes to a queue");
    Ok(())
}

/// Brings every configured broker in line with the database (Mosquitto's files and reload,
/// RabbitMQ's users), printing what was done.
pub async fn broker_sync(settings: &Settings, client: &tokio_postgres::Client) -> Result<()> {
    let ids = identities::active(client).await?;
    let report = broker::sync(settings, &ids).await?;
    if let Some(f) = report.files {
        println!(
            "broker files written: {} identities{}; {}",
            f.identities,
            if f.service_identity {
                format!(" + soilmon's own ({})", settings.mqtt.username)
            } else {
                " (no service identity: set mqtt.username and SOILMON__MQTT__PASSWORD)".into()
            },
            if f.reloaded {
                "broker reloaded"
            } else {
                "broker.reload_command is empty: reload the broker now (SIGHUP)"
            }
        );
    }
    if let Some(r) = report.rabbitmq {
        println!(
            "rabbitmq users synced through {}: {} identities, {} created or changed, {} deleted{}",
            r.node,
            r.identities,
            r.changed.len(),
            r.deleted.len(),
            if r.deleted.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.deleted.join(", "))
            }
        );
        if !r.need_rotation.is_empty() {
            println!(
                "rotate to enable on RabbitMQ (created before RabbitMQ hashes were stored, so \
                 not on RabbitMQ): {} (`soilmon stations rotate ID` / `soilmon bureaus rotate NAME`)",
                r.need_rotation.join(", ")
            );
        }
    }
    Ok(())
}

/// Prints one line per identity: name, state, creation time, counties (bureaus).
pub fn print_identities(ids: &[identities::Identity]) -> Result<()> {
    let lines: Vec<String> = ids
        .iter()
        .map(|i| {
            let scope = match i.kind {
                IdentityKind::Station => String::new(),
                IdentityKind::Bureau if i.all_counties => "\tall counties".into(),
                IdentityKind::Bureau => format!("\tcounties {}", i.counties.join(",")),
            };
            let state = i
                .revoked_at
                .map_or("active".to_string(), |t| format!("revoked {t}"));
            format!("{}\t{}\tcreated {}{scope}", i.username, state, i.created_at)
        })
        .collect();
    write_lines(&mut std::io::stdout().lock(), &lines)
}
