//! The bench's own services: a private mosquitto on a free loopback port, a fresh database on
//! the local cluster, and the soilmon under test as a child process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::report::Resources;
use crate::{resources, BenchArgs, BenchError};
use soilmon::config::Settings;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("binding a port"))?;
    Ok(l.local_addr()
        .map_err(BenchError::io("reading a port"))?
        .port())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn unique_suffix() -> String {
    format!(
        "{}_{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        std::process::id()
    )
}

/// Sends a signal with kill(1) (no libc dependency).
fn signal(pid: u32, sig: &str) -> Result<(), BenchError> {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .map_err(BenchError::io("running kill"))?;
    if !status.success() {
        return Err(BenchError::Service(format!("kill -{sig} {pid} failed")));
    }
    Ok(())
}

/// Waits for `child` to exit, at most `limit`; kills it afterwards.
async fn wait_exit(child: &mut Child, limit: Duration, what: &str) -> Result<(), BenchError> {
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(r) => {
            r.map_err(BenchError::io(format!("waiting for {what}")))?;
            Ok(())
        }
        Err(_) => {
            let _ = child.kill().await;
            Err(BenchError::Service(format!(
                "{what} did not exit within {limit:?} (killed)"
            )))
        }
    }
}

/// A mosquitto process owned by the bench.
pub struct Broker {
    /// Loopback port it listens on.
    pub port: u16,
    child: Child,
}

impl Broker {
    async fn start(exe: &Path, dir: &Path, max_queued: usize) -> Result<Broker, BenchError> {
        let port = free_port()?;
        let d = dir.display();
        let user = if running_as_root() { "user root\n" } else { "" };
        // Persistence on as in production, but saved only at exit so an autosave does not
        // stall the single-threaded broker in the middle of a measurement.
        let conf = format!(
            "# written by soilmon bench\n{user}listener {port} 127.0.0.1\n\
             allow_anonymous true\npersistence true\npersistence_location {d}/\n\
             persistence_file mosquitto.db\nautosave_interval 3600\n\
             max_queued_messages {max_queued}\nmax_queued_bytes 0\n\
             max_inflight_messages 1000\nmax_packet_size 4195328\n\
             log_dest file {d}/mosquitto.log\nlog_type error\nlog_type warning\n\
             log_type notice\nconnection_messages true\nset_tcp_nodelay true\n"
        );
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf).map_err(BenchError::io("writing mosquitto.conf"))?;
        let child = Command::new(exe)
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::io(format!("spawning {}", exe.display())))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(BenchError::Service(format!(
                    "mosquitto did not listen on 127.0.0.1:{port} within 10 s (see {d}/mosquitto.log)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Broker { port, child })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = signal(pid, "TERM");
        }
        let _ = wait_exit(&mut self.child, Duration::from_secs(20), "mosquitto").await;
    }
}

/// Everything the phases share: the broker, the bench database, the soilmon binary.
pub struct BenchEnv {
    /// The bench's mosquitto.
    pub broker: Broker,
    /// Connection string of the bench database.
    pub db_url: String,
    /// Connection string of the cluster's `postgres` database (to create and drop).
    admin_url: String,
    /// Name of the bench database.
    pub db_name: String,
    /// Temp dir: broker files and soilmon logs.
    pub dir: PathBuf,
    /// Port of soilmon's HTTP API (`SOILMON__HTTP__ADDR`).
    pub http_port: u16,
    /// Tokens file given to soilmon (`SOILMON__HTTP__TOKENS_FILE`): one `lab` token.
    tokens_file: PathBuf,
    /// The `lab` token (random, this run only).
    lab_token: String,
    /// `SOILMON__HTTP__BODY_LIMIT_BYTES`: room for the `--lab-rows` batch.
    body_limit: usize,
    /// Topic prefix of the wire contract.
    pub topic_prefix: String,
    exe: PathBuf,
    config: PathBuf,
    extra_env: Vec<(String, String)>,
    suffix: String,
    starts: std::sync::atomic::AtomicU32,
}

/// The soilmon binary under test: `--soilmon-bin`, else the `soilmon` next to this
/// executable (`cargo build --release` puts both in `target/release/`).
fn soilmon_binary(args: &BenchArgs) -> Result<PathBuf, BenchError> {
    let exe = match &args.soilmon_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(BenchError::io("locating soilmon-bench"))?
            .with_file_name(format!("soilmon{}", std::env::consts::EXE_SUFFIX)),
    };
    if !exe.is_file() {
        return Err(BenchError::Setup(format!(
            "the soilmon binary under test {} does not exist (build it with `cargo build \
             --release`, or name it with --soilmon-bin PATH)",
            exe.display()
        )));
    }
    Ok(exe)
}

/// Connects to `url` and drives the connection in a task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

impl BenchEnv {
    /// Starts the broker, creates, migrates and fills (points) the bench database.
    pub async fn start(
        settings: &Settings,
        config: &Path,
        args: &BenchArgs,
    ) -> Result<BenchEnv, BenchError> {
        let url = settings.database.url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(BenchError::Args(
                "database.url must be in key=value form for the bench (it appends dbname=…)".into(),
            ));
        }
        tokio_postgres::Config::from_str(url)?;
        let exe = soilmon_binary(args)?;
        let suffix = unique_suffix();
        let db_name = format!("soilmon_bench_{suffix}");
        let admin_url = format!("{url} dbname=postgres");
        let db_url = format!("{url} dbname={db_name}");
        let dir = std::env::temp_dir().join(format!("soilmon-bench-{suffix}"));
        std::fs::create_dir_all(&dir).map_err(BenchError::io("creating the bench temp dir"))?;
        let max_queued = (args.messages * 2 + 100_000).max(1_000_000);
        let broker = Broker::start(&args.mosquitto, &dir, max_queued).await?;
        let admin = connect(&admin_url).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await?;
        let mut extra_env = Vec::new();
        for kv in &args.soilmon_env {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(BenchError::Args(format!("--soilmon-env {kv:?}: KEY=VALUE")));
            };
            extra_env.push((k.to_string(), v.to_string()));
        }
        let lab_token = format!(
            "bench-{:032x}",
            rand::Rng::gen::<u128>(&mut rand::thread_rng())
        );
        let tokens_file = dir.join("tokens");
        std::fs::write(
            &tokens_file,
            format!(
                "# soilmon bench, this run only\n{} lab bench\n",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(lab_token.as_bytes()))
            ),
        )
        .map_err(BenchError::io("writing the tokens file"))?;
        let body_limit = settings
            .http
            .body_limit_bytes
            .max(args.lab_rows.saturating_mul(256));
        let env = BenchEnv {
            broker,
            tokens_file,
            lab_token,
            body_limit,
            db_url,
            admin_url,
            db_name,
            dir,
            http_port: free_port()?,
            topic_prefix: settings.mqtt.topic_prefix.clone(),
            exe,
            config: config.to_path_buf(),
            extra_env,
            suffix,
            starts: std::sync::atomic::AtomicU32::new(0),
        };
        let points = args.points.display().to_string();
        env.command(&["points", "import", &points]).await?;
        Ok(env)
    }

    /// The bench's `lab` API token.
    pub fn lab_token(&self) -> &str {
        &self.lab_token
    }

    /// Client id of the collector under test (fixed for the run: its persistent session).
    pub fn collector_id(&self) -> String {
        format!("bench-col-{}", self.suffix)
    }

    fn base_command(&self, args: &[&str], log: Option<&Path>) -> Result<Command, BenchError> {
        let mut c = Command::new(&self.exe);
        c.arg("--config").arg(&self.config).args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("SOILMON__") {
                c.env_remove(k);
            }
        }
        c.env("SOILMON__DATABASE__URL", &self.db_url)
            .env("SOILMON__MQTT__HOST", "127.0.0.1")
            .env("SOILMON__MQTT__PORT", self.broker.port.to_string())
            .env("SOILMON__MQTT__CLIENT_ID", self.collector_id())
            .env(
                "SOILMON__ALERTS__CLIENT_ID",
                format!("bench-pub-{}", self.suffix),
            )
            .env(
                "SOILMON__HTTP__ADDR",
                format!("127.0.0.1:{}", self.http_port),
            )
            .env("SOILMON__HTTP__TOKENS_FILE", &self.tokens_file)
            .env(
                "SOILMON__DELIVER__SECRETS_FILE",
                self.dir.join("subscription-secrets"),
            )
            .env(
                "SOILMON__HTTP__BODY_LIMIT_BYTES",
                self.body_limit.to_string(),
            )
            .env("SOILMON__LOG__FORMAT", "text")
            .env("SOILMON__LOG__LEVEL", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            c.env(k, v);
        }
        match log {
            Some(path) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(BenchError::io("opening the soilmon log"))?;
                let g = f.try_clone().map_err(BenchError::io("cloning the log"))?;
                c.stdout(Stdio::from(f)).stderr(Stdio::from(g));
            }
            None => {
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        Ok(c)
    }

    /// Runs a one-shot soilmon subcommand against the bench services.
    pub async fn command(&self, args: &[&str]) -> Result<(), BenchError> {
        let out = self
            .base_command(args, None)?
            .output()
            .await
            .map_err(BenchError::io(format!("running soilmon {args:?}")))?;
        if !out.status.success() {
            return Err(BenchError::Service(format!(
                "soilmon {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Starts `soilmon run` and waits for `ready: subscribed`.
    pub async fn soilmon(&self, phase: &str) -> Result<Soilmon, BenchError> {
        let n = self
            .starts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = self.dir.join(format!("soilmon-{n}-{phase}.log"));
        let spawned = Instant::now();
        let child = self
            .base_command(&["run"], Some(&log))?
            .spawn()
            .map_err(BenchError::io("spawning soilmon run"))?;
        let mut s = Soilmon {
            child,
            log,
            spawned,
            ready_after: Duration::ZERO,
        };
        let deadline = spawned + Duration::from_secs(60);
        loop {
            if std::fs::read_to_string(&s.log)
                .unwrap_or_default()
                .contains("ready: subscribed")
            {
                s.ready_after = spawned.elapsed();
                return Ok(s);
            }
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(BenchError::Service(format!(
                    "soilmon run exited at startup ({status}); log {}",
                    s.log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(BenchError::Service(format!(
                    "soilmon not ready within 60 s; log {}",
                    s.log.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A new client of the bench database.
    pub async fn db(&self) -> Result<tokio_postgres::Client, BenchError> {
        connect(&self.db_url).await
    }

    /// Stops the broker, drops the database (unless `keep_db`), removes the temp dir.
    pub async fn finish(self, keep_db: bool) {
        let BenchEnv {
            broker,
            admin_url,
            db_name,
            dir,
            ..
        } = self;
        broker.stop().await;
        if keep_db {
            eprintln!("bench: kept database {db_name}; logs in {}", dir.display());
            return;
        }
        match connect(&admin_url).await {
            Ok(admin) => {
                if let Err(e) = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                    .await
                {
                    eprintln!("bench: could not drop {db_name}: {e}");
                }
            }
            Err(e) => eprintln!("bench: could not drop {db_name}: {e}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A running `soilmon run` under test.
pub struct Soilmon {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// When it was spawned.
    pub spawned: Instant,
    /// Time from spawn to `ready: subscribed`.
    pub ready_after: Duration,
}

impl Soilmon {
    /// Resources used so far.
    pub fn resources(&self) -> Resources {
        self.child.id().map(resources::read).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit (30 s).
    pub async fn stop(&mut self) -> Result<(), BenchError> {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM")?;
        }
        wait_exit(&mut self.child, Duration::from_secs(30), "soilmon").await
    }
}
