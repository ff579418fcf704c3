//! Versioned, idempotent schema migrations, embedded in the binary.
//!
//! Each migration runs once, in its own transaction, under an advisory lock so that two
//! starting services cannot race. Applied versions are recorded in `schema_migrations`.
//! After the schema, optional TimescaleDB policies are enabled when the community-licensed
//! build is present (compression); on the Apache build they are skipped and everything else
//! works the same.

use tokio_postgres::Client;
use tracing::info;

use super::StoreError;

/// The migrations, in order: (version, name, SQL).
///
/// Versions 2 (lab batches) and 3 (security) were developed side by side and do not depend
/// on each other; version 4 grants the service role its rights on the lab tables; version 5
/// stops storing a station payload twice and trims the archive's indexes; version 6 keeps
/// incident tracks only for open incidents; version 7 gives lab rows one index and a
/// per-statement batch check instead of a foreign key; version 8 compresses large archived
/// inputs with lz4; version 9 adds the `readings_full` view, the one relation readers of a
/// reading's provenance use, so that the table under it can change; version 10 stores what
/// many readings share once (samples, sources, judgement bases, code tables) and redefines
/// `readings_full` over the lean tables; version 11 (issue 14) adds alert subscriptions and
/// their deliveries; version 12 adds the web console's sessions and incident actions (a new
/// archive and outbox kind); version 13 (network management) adds point programs, overdue
/// state, crop results, farmland categories, enterprises and development-land plots; version
/// 15 (issue 13's quarantine work, numbered so as not to clash with the console's 12) adds the
/// quarantine replay log; version 17 adds e-mail, digests, reminders and per-key concurrency
/// to subscriptions and fans out incident-workflow events; version 18 adds development-land
/// plots and the lab-first soil tier; version 20 writes an outbox row already fanned out when
/// no subscription exists; version 21 adds the soil tier snapshot the console and public page
/// read; version 22 drops the deliveries index the batched claim no longer reads; version 23
/// (cluster mode) stores each broker identity's RabbitMQ password hash; version 24 lists the
/// unpublished outbox rows in a narrow queue; version 25 lets the batch writer copy samples
/// with keys it drew from their sequence; version 28 reads the soil tier view by index probes
/// per point and metal. Versions need not be contiguous: each is applied
/// once, in this order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "lab", include_str!("migrations/0002_lab.sql")),
    (3, "security", include_str!("migrations/0003_security.sql")),
    (
        4,
        "lab_grants",
        include_str!("migrations/0004_lab_grants.sql"),
    ),
    (
        5,
        "lean_ingest",
        include_str!("migrations/0005_lean_ingest.sql"),
    ),
    (
        6,
        "open_tracks",
        include_str!("migrations/0006_open_tracks.sql"),
    ),
    (
        7,
        "lean_lab_rows",
        include_str!("migrations/0007_lean_lab_rows.sql"),
    ),
    (
        8,
        "archive_lz4",
        include_str!("migrations/0008_archive_lz4.sql"),
    ),
    (
        9,
        "readings_full",
        include_str!("migrations/0009_readings_full.sql"),
    ),
    (
        10,
        "lean_storage",
        include_str!("migrations/0010_lean_storage.sql"),
    ),
    (
        11,
        "subscriptions",
        include_str!("migrations/0011_subscriptions.sql"),
    ),
    (12, "console", include_str!("migrations/0012_console.sql")),
    (13, "network", include_str!("migrations/0013_network.sql")),
    (
        15,
        "quarantine_replay",
        include_str!("migrations/0015_quarantine_replay.sql"),
    ),
    (
        17,
        "alert_channels",
        include_str!("migrations/0017_alert_channels.sql"),
    ),
    (18, "plots", include_str!("migrations/0018_plots.sql")),
    (
        20,
        "fanout_mark",
        include_str!("migrations/0020_fanout_mark.sql"),
    ),
    (
        21,
        "tier_snapshot",
        include_str!("migrations/0021_tier_snapshot.sql"),
    ),
    (
        22,
        "claim_batches",
        include_str!("migrations/0022_claim_batches.sql"),
    ),
    (
        23,
        "rabbitmq_identities",
        include_str!("migrations/0023_rabbitmq_identities.sql"),
    ),
    (
        24,
        "outbox_queue",
        include_str!("migrations/0024_outbox_queue.sql"),
    ),
    (
        25,
        "copy_samples",
        include_str!("migrations/0025_copy_samples.sql"),
    ),
    (
        26,
        "incident_epoch",
        include_str!("migrations/0026_incident_epoch.sql"),
    ),
    (
        27,
        "outbox_json",
        include_str!("migrations/0027_outbox_json.sql"),
    ),
    (
        28,
        "tier_probes",
        include_str!("migrations/0028_tier_probes.sql"),
    ),
];

/// Whether `schema_migrations` exists and lists every version in [`MIGRATIONS`].
async fn up_to_date(client: &Client) -> Result<bool, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(false);
    }
    let rows = client
        .query("SELECT version FROM schema_migrations", &[])
        .await?;
    let done: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    Ok(MIGRATIONS.iter().all(|(v, _, _)| done.contains(v)))
}

/// Arbitrary constant identifying soilmon's migration lock.
const LOCK_KEY: i64 = 0x501_1303;

/// What `run` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call.
    pub applied: Vec<i32>,
    /// The TimescaleDB license (`apache` or `timescale`).
    pub license: String,
    /// Whether the compression policy is in place.
    pub compression: bool,
}

/// Brings the schema up to date.
///
/// When every migration is already applied nothing is created or altered, so a service
/// connected as a role without DDL rights (a member of `soilmon_service`) can call this at
/// startup; the schema itself is migrated by the owner (`soilmon migrate`).
pub async fn run(client: &mut Client) -> Result<MigrationReport, StoreError> {
    run_to(client, i32::MAX).await
}

/// [`run`], applying only the migrations up to and including `version` (tests that write
/// data in an older schema and then migrate it use this; the service always runs [`run`]).
pub async fn run_to(client: &mut Client, version: i32) -> Result<MigrationReport, StoreError> {
    if up_to_date(client).await? {
        let license: String = client
            .query_one("SELECT current_setting('timescaledb.license')", &[])
            .await?
            .get(0);
        let compression = license == "timescale";
        return Ok(MigrationReport {
            applied: Vec::new(),
            license,
            compression,
        });
    }
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS.iter().filter(|(v, _, _)| *v <= version) {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
            .await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql)
                .await
                .map_err(|e| StoreError::Migration {
                    version: *version,
                    source: e,
                })?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[version, name],
            )
            .await?;
            info!(version, name, "migration applied");
            applied.push(*version);
        }
        tx.commit().await?;
    }
    let license: String = client
        .query_one("SELECT current_setting('timescaledb.license')", &[])
        .await?
        .get(0);
    // The policy names schema 10's columns: only once every migration is applied.
    let complete = MIGRATIONS.iter().all(|(v, _, _)| *v <= version);
    let compression = license == "timescale" && complete;
    if compression {
        client
            .batch_execute(
                "ALTER TABLE readings SET (timescaledb.compress,
                     timescaledb.compress_segmentby = 'point_key, metal');
                 SELECT add_compression_policy('readings', INTERVAL '365 days',
                     if_not_exists => true);",
            )
            .await?;
    } else {
        info!(%license, "TimescaleDB policies (compression) need the community build; skipped");
    }
    Ok(MigrationReport {
        applied,
        license,
        compression,
    })
}
