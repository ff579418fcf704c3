//! Shared harness for soilmon's integration tests: real services, no Docker.
//!
//! * [`Broker`]: a mosquitto process owned by one test (config, persistence and log in a
//!   temp dir, loopback listener on a free port).
//! * [`TestDb`]: a fresh database on the shared project cluster (`SOILMON_TEST_PG`, started by
//!   `deploy/local/services.sh`).
//! * [`PrivateCluster`]: a whole PostgreSQL cluster owned by one test, for outage tests that
//!   stop and resume the database.
//! * [`Soilmon`]: the binary under test, configured through `SOILMON__…` overrides.
//! * [`Subscriber`] / [`publish_all`]: small MQTT 3.1.1 clients (rumqttc) with random ids.
//! * [`wait_until`], [`free_port`], [`repo_path`]: polling and plumbing.
//!
//! Environment (all optional; the defaults match `deploy/local/services.sh env`):
//!
//! | variable | default |
//! |---|---|
//! | `SOILMON_TEST_PG` | `host=/var/tmp/soilmon-local/pg/sock port=55432 user=postgres` |
//! | `SOILMON_PG_BIN` | `/usr/lib/postgresql/15/bin` |
//! | `SOILMON_MOSQUITTO` | `/usr/sbin/mosquitto` |
//!
//! Every wait has a timeout and fails with a message naming what was awaited; nothing here
//! uses a sleep as an assertion.
#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// Default admin connection string of the shared test cluster (no `dbname`).
pub const DEFAULT_TEST_PG: &str = "host=/var/tmp/soilmon-local/pg/sock port=55432 user=postgres";
/// Default directory of the PostgreSQL server binaries (`initdb`, `pg_ctl`, `pg_config`).
pub const DEFAULT_PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// Default mosquitto executable.
pub const DEFAULT_MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// Largest MQTT packet the test clients send or accept (the broker allows 2 MiB).
pub const CLIENT_MAX_PACKET: usize = 4 * 1024 * 1024;

/// Counter that makes names unique within one test process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short random lowercase hex string (for names and client ids).
pub fn random_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// A name unique across test processes and within this one: `<prefix>_<pid>_<counter>_<random>`.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_suffix()
    )
}

/// Absolute path of `rel` inside the repository (`CARGO_MANIFEST_DIR`).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A currently free TCP port on 127.0.0.1 (bind port 0, read it, release it).
///
/// Another process may grab the port before it is used; the window is small and the
/// services below fail loudly if their port is taken.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind 127.0.0.1:0 to find a free port")
}

/// Polls `f` every 100 ms until it returns `Ok(true)`; `Err` naming `what` after `timeout`.
///
/// An `Err` from `f` counts as "not yet" (services may be restarting); the last such error
/// is included in the timeout message.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err: Option<anyhow::Error> = None;
    loop {
        match f().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last_err {
                Some(e) => {
                    anyhow!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Value of environment variable `key`, or `default` when unset or empty.
fn env_or(key: &str, default: &str) -> String {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default.to_string(),
    }
}

/// Admin connection string of the shared test cluster (`SOILMON_TEST_PG`, no `dbname`).
pub fn test_pg_admin() -> String {
    env_or("SOILMON_TEST_PG", DEFAULT_TEST_PG)
}

/// Directory holding the PostgreSQL server binaries (`SOILMON_PG_BIN`).
pub fn pg_bin() -> PathBuf {
    PathBuf::from(env_or("SOILMON_PG_BIN", DEFAULT_PG_BIN))
}

/// Sends `signal` (e.g. `"TERM"`) to `pid` with kill(1).
fn send_signal(pid: u32, signal: &str) -> Result<()> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running kill(1)")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status}); process already gone?");
    }
    Ok(())
}

/// Reads a file for diagnostics; never fails (returns a note instead).
fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Connects to `url` (libpq key=value or URI) without TLS and spawns the connection task.
pub async fn pg_connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_postgres::connect(url, tokio_postgres::NoTls),
    )
    .await
    .map_err(|_| anyhow!("timed out after 10 s connecting to PostgreSQL at `{url}`"))?
    .with_context(|| format!("connecting to PostgreSQL at `{url}`"))?;
    tokio::spawn(async move {
        // The error (if any) surfaces on the client's next call; nothing to do here.
        let _ = conn.await;
    });
    Ok(client)
}

/// Whether the server behind `client` can `CREATE EXTENSION timescaledb`
/// (installed, i.e. listed in `pg_available_extensions`, and preloaded).
pub async fn timescaledb_available(client: &tokio_postgres::Client) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') \
                    AND current_setting('shared_preload_libraries') LIKE '%timescaledb%'",
            &[],
        )
        .await
        .context("checking for timescaledb")?;
    Ok(row.get(0))
}

// ------------------------------------------------------------------------------------------
// Broker
// ------------------------------------------------------------------------------------------

/// A mosquitto process owned by one test.
///
/// Config, persistence database and log live in a temp dir; the listener is on 127.0.0.1 at
/// a free port that is kept across [`Broker::restart`]. Persistence is on with
/// `autosave_interval 1`, queues are effectively unlimited (`max_queued_messages 1000000`,
/// `max_queued_bytes 0`), `max_inflight_messages 1000`, `max_packet_size 2097152` (a 1 MB
/// payload passes), anonymous access allowed, `user root` (tests run as root).
pub struct Broker {
    /// The loopback port the broker listens on.
    pub port: u16,
    /// Temp dir with `mosquitto.conf`, `mosquitto.log`, `stderr.log` and `mosquitto.db`.
    dir: tempfile::TempDir,
    /// The running process, if any.
    child: Option<tokio::process::Child>,
}

impl Broker {
    /// Writes the config and starts mosquitto; returns once the port accepts connections
    /// (timeout 10 s, error includes the broker log).
    pub async fn start() -> Result<Broker> {
        let dir = tempfile::Builder::new()
            .prefix("soilmon-mosq-")
            .tempdir()
            .context("creating broker temp dir")?;
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            "# written by tests/common/mod.rs\n\
             listener {port} 127.0.0.1\n\
             allow_anonymous true\n\
             user root\n\
             persistence true\n\
             persistence_location {d}/\n\
             persistence_file mosquitto.db\n\
             autosave_interval 1\n\
             max_queued_messages 1000000\n\
             max_queued_bytes 0\n\
             max_inflight_messages 1000\n\
             max_packet_size 2097152\n\
             log_dest file {d}/mosquitto.log\n\
             log_type error\n\
             log_type warning\n\
             log_type notice\n\
             log_type information\n\
             log_type subscribe\n\
             log_type unsubscribe\n\
             log_timestamp_format %H:%M:%S\n\
             connection_messages true\n"
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf)
            .context("writing mosquitto.conf")?;
        let mut broker = Broker {
            port,
            dir,
            child: None,
        };
        broker.spawn().await?;
        Ok(broker)
    }

    /// Starts the process from the existing config and waits for the port.
    async fn spawn(&mut self) -> Result<()> {
        if self.child.is_some() {
            bail!("broker on port {} is already running", self.port);
        }
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .context("opening broker stderr.log")?;
        let exe = env_or("SOILMON_MOSQUITTO", DEFAULT_MOSQUITTO);
        let child = tokio::process::Command::new(&exe)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {exe}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "mosquitto exited during startup ({status}) on port {}:\n{}",
                    self.port,
                    self.log()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mosquitto did not accept connections on port {} within 10 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM and wait for exit (up to 10 s, then SIGKILL and `Err`); mosquitto writes its
    /// persistence file on SIGTERM. A no-op when not running.
    pub async fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            send_signal(pid, "TERM")?;
        }
        match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
            Ok(status) => {
                status.context("waiting for mosquitto")?;
                Ok(())
            }
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "mosquitto on port {} did not exit within 10 s of SIGTERM (killed):\n{}",
                    self.port,
                    self.log()
                )
            }
        }
    }

    /// SIGKILL and reap: the broker loses what it received since its last autosave.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.context("killing mosquitto")?;
        }
        Ok(())
    }

    /// Starts the broker again with the same port, config and persistence directory
    /// (stops it first if it is still running).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The broker log (plus anything mosquitto wrote to stderr), for diagnostics.
    pub fn log(&self) -> String {
        let mut s = read_lossy(&self.dir.path().join("mosquitto.log"));
        let err_path = self.dir.path().join("stderr.log");
        if let Ok(err) = std::fs::read(&err_path) {
            if !err.is_empty() {
                s.push_str("\n--- stderr ---\n");
                s.push_str(&String::from_utf8_lossy(&err));
            }
        }
        s
    }

    /// The temp dir holding config, log and persistence file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Broker {
    /// Kills the process (SIGKILL); `kill_on_drop` makes sure of it and tokio reaps it.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
    }
}

// ------------------------------------------------------------------------------------------
// TestDb
// ------------------------------------------------------------------------------------------

/// A fresh database on the shared project cluster ([`test_pg_admin`]).
///
/// Named `t_<pid>_<counter>_<random>`. Not dropped automatically (leftovers are harmless and
/// useful for post-mortems); call [`TestDb::drop_db`] to remove it.
pub struct TestDb {
    /// Database name.
    pub name: String,
    /// Full libpq key=value connection string, including `dbname`.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database (from `template1`).
    pub async fn create() -> Result<TestDb> {
        Self::create_inner(None).await
    }

    /// Creates a database as a copy of `template` (e.g. a migrated template database).
    /// Fails if another session is connected to `template` (PostgreSQL requirement).
    pub async fn create_from_template(template: &str) -> Result<TestDb> {
        Self::create_inner(Some(template)).await
    }

    async fn create_inner(template: Option<&str>) -> Result<TestDb> {
        let admin_url = test_pg_admin();
        let admin = pg_connect(&format!("{admin_url} dbname=postgres"))
            .await
            .context(
            "shared test cluster not reachable: start it with `deploy/local/services.sh start` \
                 and run tests after `eval \"$(deploy/local/services.sh env)\"` (SOILMON_TEST_PG)",
        )?;
        let name = unique_name("t");
        let sql = match template {
            Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
            None => format!("CREATE DATABASE \"{name}\""),
        };
        // "source database is being accessed by other users" is transient when another test
        // briefly connects to the template; retry for a while.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match admin.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e)
                    if Instant::now() < deadline
                        && e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("{sql} (admin: {admin_url})")),
            }
        }
        Ok(TestDb {
            url: format!("{admin_url} dbname={name}"),
            name,
        })
    }

    /// A connected client for this database (connection task spawned).
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        pg_connect(&self.url).await
    }

    /// Freezes this database as a template for [`TestDb::create_from_template`]:
    /// `IS_TEMPLATE true ALLOW_CONNECTIONS false`, then terminates remaining sessions, which
    /// includes TimescaleDB's per-database scheduler (it would otherwise block every clone
    /// with "source database is being accessed by other users", timescale/timescaledb #4048;
    /// the launcher does not restart it for a template). Close your own clients first.
    pub async fn mark_template(&self) -> Result<()> {
        let admin = pg_connect(&format!("{} dbname=postgres", test_pg_admin())).await?;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{0}\" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
                self.name
            ))
            .await
            .with_context(|| format!("marking {} as template", self.name))?;
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .with_context(|| format!("terminating sessions on {}", self.name))?;
        Ok(())
    }

    /// Drops the database (`WITH (FORCE)`, terminating sessions; a template is unmarked
    /// first).
    pub async fn drop_db(&self) -> Result<()> {
        let admin = pg_connect(&format!("{} dbname=postgres", test_pg_admin())).await?;
        let _ = admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" WITH IS_TEMPLATE false",
                self.name
            ))
            .await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await
            .with_context(|| format!("dropping database {}", self.name))?;
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------
// PrivateCluster
// ------------------------------------------------------------------------------------------

/// A private PostgreSQL cluster owned by one test (for outage tests that stop the database).
///
/// `initdb -A trust -U postgres` as the `postgres` user in a temp dir owned by `postgres`,
/// unix socket only (`listen_addresses=''`), `fsync=off`, TimescaleDB preloaded when it is
/// installed (see [`PrivateCluster::timescaledb`]). A database `soilmon` is created and
/// [`PrivateCluster::url`] points at it.
pub struct PrivateCluster {
    /// libpq key=value connection string of database `soilmon`.
    pub url: String,
    /// Whether `timescaledb` is in `shared_preload_libraries` (its library was found in
    /// `pg_config --pkglibdir`).
    pub timescaledb: bool,
    /// Socket directory.
    pub sock_dir: PathBuf,
    /// Port (names the socket file only; no TCP listener).
    pub port: u16,
    /// Temp dir: `data/`, `sock/`, `postgres.log`.
    dir: tempfile::TempDir,
}

/// Runs `cmd args…` as the `postgres` user (via runuser) in `cwd`; Err with output on failure.
async fn run_as_postgres(
    cwd: &Path,
    cmd: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<Output> {
    let mut c = tokio::process::Command::new("runuser");
    c.arg("-u").arg("postgres").arg("--").arg(cmd).args(args);
    c.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{} {}", cmd.display(), args.join(" "));
    let out = tokio::time::timeout(timeout, c.output())
        .await
        .map_err(|_| anyhow!("timed out after {timeout:?}: {what}"))?
        .with_context(|| format!("spawning runuser -u postgres -- {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

impl PrivateCluster {
    /// initdb + start + `CREATE DATABASE soilmon`.
    pub async fn start() -> Result<PrivateCluster> {
        let dir = tempfile::Builder::new()
            .prefix("soilmon-pg-")
            .tempdir()
            .context("creating cluster temp dir")?;
        let sock_dir = dir.path().join("sock");
        std::fs::create_dir(&sock_dir).context("creating socket dir")?;
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg("postgres:postgres")
            .arg(dir.path())
            .status()
            .context("running chown")?;
        if !status.success() {
            bail!("chown -R postgres:postgres {} failed", dir.path().display());
        }

        let bin = pg_bin();
        let data = dir.path().join("data");
        let data_s = data.to_string_lossy().into_owned();
        run_as_postgres(
            dir.path(),
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            Duration::from_secs(120),
        )
        .await
        .context("initdb for private cluster")?;

        let timescaledb = timescaledb_lib_installed(&bin).await;
        if !timescaledb {
            eprintln!(
                "[harness] timescaledb library not found under {}: private cluster runs without it",
                bin.display()
            );
        }
        let port = free_port();
        let cluster = PrivateCluster {
            url: format!(
                "host={} port={port} user=postgres dbname=soilmon",
                sock_dir.display()
            ),
            timescaledb,
            sock_dir,
            port,
            dir,
        };
        cluster.pg_ctl_start().await?;
        let admin = pg_connect(&cluster.admin_url()).await?;
        admin
            .batch_execute("CREATE DATABASE soilmon")
            .await
            .context("CREATE DATABASE soilmon")?;
        Ok(cluster)
    }

    /// Connection string of the `postgres` maintenance database.
    pub fn admin_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.sock_dir.display(),
            self.port
        )
    }

    /// A connected client for database `soilmon`.
    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        pg_connect(&self.url).await
    }

    async fn pg_ctl_start(&self) -> Result<()> {
        let mut opts = format!(
            "-k {} -c listen_addresses='' -p {} -c fsync=off",
            self.sock_dir.display(),
            self.port
        );
        if self.timescaledb {
            opts.push_str(
                " -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off",
            );
        }
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        let log = self
            .dir
            .path()
            .join("postgres.log")
            .to_string_lossy()
            .into_owned();
        // -l is required: without it the postmaster inherits our stdout pipe and
        // `output()` never sees EOF.
        run_as_postgres(
            self.dir.path(),
            &pg_bin().join("pg_ctl"),
            &[
                "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts, "start",
            ],
            Duration::from_secs(90),
        )
        .await
        .with_context(|| format!("pg_ctl start; server log:\n{}", self.log()))?;
        // pg_ctl -w waits for "ready"; double-check over the socket.
        let url = self.admin_url();
        wait_until(
            "private cluster to accept connections",
            Duration::from_secs(30),
            || {
                let url = url.clone();
                async move {
                    let c = pg_connect(&url).await?;
                    c.simple_query("SELECT 1").await?;
                    Ok(true)
                }
            },
        )
        .await
    }

    /// Stops the server (`pg_ctl stop -m fast`, waits).
    pub async fn stop(&self) -> Result<()> {
        let data = self.dir.path().join("data").to_string_lossy().into_owned();
        run_as_postgres(
            self.dir.path(),
            &pg_bin().join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"],
            Duration::from_secs(90),
        )
        .await
        .context("pg_ctl stop -m fast")?;
        Ok(())
    }

    /// Starts the server again after [`PrivateCluster::stop`] and waits until it accepts
    /// connections.
    pub async fn resume(&self) -> Result<()> {
        self.pg_ctl_start().await
    }

    /// The server log, for diagnostics.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("postgres.log"))
    }
}

impl Drop for PrivateCluster {
    /// `pg_ctl stop -m immediate`, best effort (the temp dir is removed afterwards).
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        if !data.join("postmaster.pid").exists() {
            return;
        }
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether `timescaledb.so` is in the server's `pkglibdir`.
async fn timescaledb_lib_installed(bin: &Path) -> bool {
    let Ok(out) = tokio::process::Command::new(bin.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .await
    else {
        return false;
    };
    let lib = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    lib.join("timescaledb.so").exists()
}

// ------------------------------------------------------------------------------------------
// Soilmon
// ------------------------------------------------------------------------------------------

/// The soilmon binary under test.
///
/// Runs `soilmon --config <repo>/config/default.toml <args…>` with inherited `SOILMON__*`
/// variables removed and these set: `SOILMON__DATABASE__URL`, `SOILMON__MQTT__HOST=127.0.0.1`,
/// `SOILMON__MQTT__PORT`, `SOILMON__MQTT__CLIENT_ID` (`col-<random>`, stable for the lifetime
/// of this value so restarts resume the persistent session), `SOILMON__ALERTS__CLIENT_ID`
/// (`pub-<random>`), `SOILMON__LOG__FORMAT=json`, plus extras from [`Soilmon::env`].
pub struct Soilmon {
    /// Environment overrides, in order (later entries replace earlier ones with the same key).
    envs: Vec<(String, String)>,
    /// MQTT client id of the collector.
    pub collector_client_id: String,
    /// MQTT client id of the alert publisher.
    pub alerts_client_id: String,
    /// The running `run` process, if any.
    child: Option<std::process::Child>,
    /// Temp dir holding `soilmon.log`.
    dir: tempfile::TempDir,
    /// Number of `start` calls so far (for log separators).
    starts: u32,
}

impl Soilmon {
    /// Configuration for the database at `db_url` and the broker on 127.0.0.1:`broker_port`.
    pub fn new(db_url: &str, broker_port: u16) -> Soilmon {
        let collector_client_id = format!("col-{}", random_suffix());
        let alerts_client_id = format!("pub-{}", random_suffix());
        let envs = vec![
            ("SOILMON__DATABASE__URL".to_string(), db_url.to_string()),
            ("SOILMON__MQTT__HOST".to_string(), "127.0.0.1".to_string()),
            ("SOILMON__MQTT__PORT".to_string(), broker_port.to_string()),
            (
                "SOILMON__MQTT__CLIENT_ID".to_string(),
                collector_client_id.clone(),
            ),
            (
                "SOILMON__ALERTS__CLIENT_ID".to_string(),
                alerts_client_id.clone(),
            ),
            ("SOILMON__LOG__FORMAT".to_string(), "json".to_string()),
            // Tests read tiers right after storing samples: refresh the snapshot every second.
            (
                "SOILMON__CONSOLE__TIERS_REFRESH_SECS".to_string(),
                "1".to_string(),
            ),
            // Every service under test gets its own HTTP port.
            (
                "SOILMON__HTTP__ADDR".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        Soilmon {
            envs,
            collector_client_id,
            alerts_client_id,
            child: None,
            dir: tempfile::Builder::new()
                .prefix("soilmon-run-")
                .tempdir()
                .expect("creating soilmon temp dir"),
            starts: 0,
        }
    }

    /// Adds (or replaces) an environment override, e.g. `("SOILMON__INGEST__BATCH_MAX", "10")`.
    pub fn env(mut self, key: &str, value: &str) -> Soilmon {
        self.set_env(key, value);
        self
    }

    /// Like [`Soilmon::env`] on a borrowed value (takes effect at the next start/command).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.envs.retain(|(k, _)| k != key);
        self.envs.push((key.to_string(), value.to_string()));
    }

    /// Path of the binary under test.
    pub fn exe() -> PathBuf {
        PathBuf::from(env!("CARGO_BIN_EXE_soilmon"))
    }

    fn base_command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(Self::exe());
        c.arg("--config")
            .arg(repo_path("config/default.toml"))
            .args(args)
            .current_dir(repo_path(""))
            .stdin(Stdio::null());
        for (k, _) in std::env::vars() {
            if k.starts_with("SOILMON__") {
                c.env_remove(k);
            }
        }
        c.env("RUST_BACKTRACE", "1");
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs a one-shot subcommand (e.g. `["migrate"]`, `["points", "import", path]`) and
    /// returns its output (stdout/stderr captured). Times out (Err) after 120 s.
    pub async fn command(&self, args: &[&str]) -> Result<Output> {
        let mut c = tokio::process::Command::from(self.base_command(args));
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(120), c.output())
            .await
            .map_err(|_| anyhow!("soilmon {args:?} did not finish within 120 s"))?
            .with_context(|| format!("spawning soilmon {args:?}"))
    }

    /// Spawns `soilmon run` with stdout+stderr appended to the log file; Err (with the log)
    /// if it is not alive 300 ms later. Readiness is not awaited: tests wait on effects.
    pub async fn start(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("soilmon is already running (pid {})", child.id());
            }
        }
        self.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening soilmon log")?;
        writeln!(log, "===== harness: start #{} =====", self.starts)?;
        let err = log.try_clone()?;
        let child = self
            .base_command(&["run"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .context("spawning soilmon run")?;
        self.child = Some(child);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            self.child = None;
            bail!(
                "soilmon run exited at startup ({status}); log:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// SIGKILL and reap (no-op when not running).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            child.wait().context("reaping soilmon")?;
        }
        Ok(())
    }

    /// SIGTERM and wait up to 30 s for exit (then SIGKILL and Err with the log).
    pub async fn terminate(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("soilmon is not running");
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        send_signal(child.id(), "TERM")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "soilmon did not exit within 30 s of SIGTERM (killed); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `run` is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The address its HTTP API listens on (`SOILMON__HTTP__ADDR`, `127.0.0.1:<port>`).
    pub fn http_addr(&self) -> String {
        self.envs
            .iter()
            .rev()
            .find(|(k, _)| k == "SOILMON__HTTP__ADDR")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The value of the unlabelled gauge or counter `name` on its `/metrics` page.
    pub async fn metric(&self, name: &str) -> Result<f64> {
        let url = format!("http://{}/metrics", self.http_addr());
        let page = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {url}"))?
            .text()
            .await?;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no metric {name} on {url}:\n{page}"))
    }

    /// Process id of the running `run`, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Path of the log file (all starts appended, separated by `===== harness: start #n`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("soilmon.log")
    }

    /// Content of the log file.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }
}

impl Drop for Soilmon {
    /// Kills (SIGKILL) and reaps a still running `run`.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// MQTT helpers
// ------------------------------------------------------------------------------------------

/// MQTT 3.1.1 options for a test client: random id, clean session, 4 MiB packets.
fn client_options(prefix: &str, port: u16) -> MqttOptions {
    let mut opts = MqttOptions::new(format!("{prefix}-{}", random_suffix()), "127.0.0.1", port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(CLIENT_MAX_PACKET, CLIENT_MAX_PACKET);
    opts
}

/// An MQTT message as received: `(topic, payload)`.
pub type Message = (String, Vec<u8>);

/// A QoS1 subscriber collecting every publish it receives in a background task.
///
/// [`Subscriber::start`]: clean session with a random id; after a reconnect (e.g. broker
/// restart) it subscribes again, but messages published while it was disconnected are lost.
/// [`Subscriber::start_persistent`]: fixed id, persistent session (the broker queues QoS1
/// messages while it is away).
pub struct Subscriber {
    /// `(topic, payload)` in arrival order.
    received: Arc<Mutex<Vec<Message>>>,
    /// Number of messages received so far.
    count: watch::Receiver<usize>,
    /// The client (kept so the event loop's request channel stays open).
    client: AsyncClient,
    /// The task owning `EventLoop::poll()`.
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `topic_filter` at QoS1 and returns after the SubAck
    /// (timeout 10 s).
    pub async fn start(port: u16, topic_filter: &str) -> Result<Subscriber> {
        Self::start_with(client_options("sub", port), topic_filter).await
    }

    /// Like [`Subscriber::start`] but with `client_id` and `clean_session = false`: a later
    /// subscriber with the same id receives what the broker queued in between (also across a
    /// broker stop/restart, which persists the session).
    pub async fn start_persistent(
        port: u16,
        topic_filter: &str,
        client_id: &str,
    ) -> Result<Subscriber> {
        let mut opts = client_options("sub", port);
        opts.set_client_id(client_id.to_string())
            .set_clean_session(false);
        Self::start_with(opts, topic_filter).await
    }

    async fn start_with(opts: MqttOptions, topic_filter: &str) -> Result<Subscriber> {
        let port = opts.broker_address().1;
        let (client, eventloop) = AsyncClient::new(opts, 64);
        client
            .subscribe(topic_filter, QoS::AtLeastOnce)
            .await
            .context("queueing SUBSCRIBE")?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let (count_tx, count) = watch::channel(0usize);
        let (suback_tx, suback_rx) = oneshot::channel::<std::result::Result<(), String>>();
        let task = tokio::spawn(subscriber_loop(
            eventloop,
            client.clone(),
            topic_filter.to_string(),
            received.clone(),
            count_tx,
            suback_tx,
        ));
        match tokio::time::timeout(Duration::from_secs(10), suback_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                task.abort();
                bail!("subscriber on port {port} for `{topic_filter}` failed: {e}");
            }
            Ok(Err(_)) => {
                task.abort();
                bail!("subscriber task on port {port} ended before SubAck");
            }
            Err(_) => {
                task.abort();
                bail!("no SubAck within 10 s (port {port}, filter `{topic_filter}`)");
            }
        }
        Ok(Subscriber {
            received,
            count,
            client,
            task,
        })
    }

    /// Waits until at least `n` messages arrived or `timeout` passed; returns all received so
    /// far (possibly fewer than `n`: the test asserts).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<(String, Vec<u8>)> {
        let mut rx = self.count.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        self.received()
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }

    /// Sends DISCONNECT and waits (up to 5 s) for the event loop to end. Dropping a
    /// `Subscriber` instead just closes the socket (the broker sees a connection loss).
    pub async fn disconnect(mut self) -> Result<()> {
        self.client
            .try_disconnect()
            .context("queueing DISCONNECT")?;
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .map_err(|_| anyhow!("subscriber did not disconnect within 5 s"))?
            .context("subscriber task")?;
        Ok(())
    }
}

impl Drop for Subscriber {
    /// Stops the event-loop task (the TCP connection closes with it).
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Event loop of a [`Subscriber`]: records publishes, reports the first SubAck (or the first
/// connection error before it), resubscribes after reconnects, backs off after errors.
async fn subscriber_loop(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topic_filter: String,
    received: Arc<Mutex<Vec<Message>>>,
    count_tx: watch::Sender<usize>,
    suback_tx: oneshot::Sender<std::result::Result<(), String>>,
) {
    let mut suback_tx = Some(suback_tx);
    let mut connected_once = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let n = {
                    let mut r = received.lock().unwrap();
                    r.push((p.topic.clone(), p.payload.to_vec()));
                    r.len()
                };
                let _ = count_tx.send(n);
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                if let Some(tx) = suback_tx.take() {
                    let ok = ack
                        .return_codes
                        .iter()
                        .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    let _ = tx.send(if ok {
                        Ok(())
                    } else {
                        Err(format!("broker refused subscription: {ack:?}"))
                    });
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                if connected_once {
                    // Clean session: the broker forgot the subscription.
                    let _ = client.try_subscribe(topic_filter.clone(), QoS::AtLeastOnce);
                }
                connected_once = true;
            }
            Ok(_) => {}
            Err(e) => {
                if let Some(tx) = suback_tx.take() {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Publishes `msgs` at QoS1 with a fresh clean-session client and returns once every PUBACK
/// arrived (timeout 10 s + 20 ms per message), then disconnects.
///
/// Packets up to 4 MiB; the request channel holds the whole batch. A connection error is
/// returned as `Err` (no retry, so nothing is silently duplicated).
pub async fn publish_all(port: u16, msgs: Vec<(String, Vec<u8>)>) -> Result<()> {
    if msgs.is_empty() {
        return Ok(());
    }
    let total = msgs.len();
    let (client, mut eventloop) = AsyncClient::new(client_options("pub", port), total + 8);
    for (topic, payload) in msgs {
        client
            .try_publish(topic, QoS::AtLeastOnce, false, payload)
            .context("queueing PUBLISH")?;
    }
    let timeout = Duration::from_secs(10) + Duration::from_millis(20) * total as u32;
    let acked = tokio::time::timeout(timeout, async {
        let mut acked = 0usize;
        while acked < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => {
                    return Err(anyhow!(
                        "MQTT connection error after {acked}/{total} PUBACKs (port {port}): {e}"
                    ))
                }
            }
        }
        Ok(acked)
    })
    .await
    .map_err(|_| {
        anyhow!("timed out after {timeout:?} waiting for {total} PUBACKs (port {port})")
    })??;
    debug_assert_eq!(acked, total);

    // Orderly DISCONNECT; best effort, bounded.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    Ok(())
}
pub mod api;
pub mod cluster;
pub mod lab;
pub mod pipeline;
pub mod receiver;
pub mod secure;
pub mod smtp;
pub mod subs;

/// Resumes the persistent session `client_id` (soilmon's collector, stopped first) with a
/// bare client, the way the bench counts redeliveries: returns every publish the broker
/// sends until 3 s pass without one after the ConnAck (hard limit 60 s). The client acks
/// what it gets, so the session is empty afterwards.
pub async fn resume_session(port: u16, client_id: &str) -> Result<Vec<Message>> {
    let mut opts = client_options("resume", port);
    opts.set_client_id(client_id.to_string())
        .set_clean_session(false);
    let (client, mut el) = AsyncClient::new(opts, 64);
    let mut got = Vec::new();
    let hard = Instant::now() + Duration::from_secs(60);
    let mut until = hard;
    loop {
        match tokio::time::timeout_at(until.into(), el.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => bail!("resuming session {client_id}: {e}"),
            Ok(Ok(Event::Incoming(Incoming::ConnAck(_)))) => {
                until = (Instant::now() + Duration::from_secs(3)).min(hard);
            }
            Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => {
                got.push((p.topic.clone(), p.payload.to_vec()));
                until = (Instant::now() + Duration::from_secs(3)).min(hard);
            }
            Ok(Ok(_)) => {}
        }
    }
    client.try_disconnect().context("queueing DISCONNECT")?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = el.poll().await {
            if let Event::Outgoing(Outgoing::Disconnect) = ev {
                break;
            }
        }
    })
    .await;
    Ok(got)
}
