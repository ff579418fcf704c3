//! A real SMTP server on loopback for the e-mail tests: `tests/common/smtp_sink.py`
//! (Python `aiosmtpd`, a Debian package `deploy/local/services.sh` installs), in its own
//! process, killed on drop. It requires AUTH with the given user and password and records
//! every message as JSON (interpreter: `/usr/bin/python3`, or `SOILMON_PYTHON`): envelope,
//! login, the raw MIME text, what Python's e-mail parser decodes from it (headers, charset,
//! text body), so the tests check both the encoding on the wire and the decoded content, and
//! the TLS version it came over. Plain (no STARTTLS offered), STARTTLS required, or implicit
//! TLS, with a certificate from a throwaway CA (`secure::make_test_ca`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

/// How the server protects the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// Plain text, no STARTTLS offered.
    Plain,
    /// STARTTLS offered and required before anything else.
    Starttls,
    /// TLS from the first byte (smtps).
    Implicit,
}

/// The running SMTP server.
pub struct SmtpSink {
    /// Its loopback port.
    pub port: u16,
    tls: SinkTls,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpSink {
    /// Starts a plain one on a free port, requiring AUTH as `user` / `password`.
    pub fn start(user: &str, password: &str) -> Result<SmtpSink> {
        SmtpSink::start_with(user, password, SinkTls::Plain, None)
    }

    /// Starts one with TLS (`tls` not [`SinkTls::Plain`]) whose certificate and key are
    /// `server.crt` and `server.key` in `certs` (made by `secure::make_test_ca`).
    pub fn start_with(
        user: &str,
        password: &str,
        tls: SinkTls,
        certs: Option<&Path>,
    ) -> Result<SmtpSink> {
        let port = super::free_port();
        let dir = tempfile::tempdir()?;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/smtp_sink.py");
        // Debian's interpreter, which has the Debian package (another python3 may be first
        // on PATH); SOILMON_PYTHON overrides it.
        let python =
            std::env::var("SOILMON_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string());
        let mut cmd = Command::new(python);
        cmd.arg(script)
            .arg(port.to_string())
            .arg(dir.path())
            .args([user, password]);
        if tls != SinkTls::Plain {
            let certs = certs.context("a TLS sink needs its certificate directory")?;
            let mode = if tls == SinkTls::Starttls {
                "starttls"
            } else {
                "implicit"
            };
            cmd.args(["--tls", mode, "--cert"])
                .arg(certs.join("server.crt"))
                .arg("--key")
                .arg(certs.join("server.key"));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting tests/common/smtp_sink.py (python3-aiosmtpd: services.sh up)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait()? {
                return Err(anyhow!("smtp_sink.py exited: {status}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(anyhow!("smtp_sink.py did not listen on {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(SmtpSink {
            port,
            tls,
            dir,
            child,
        })
    }

    /// `smtp://USER@127.0.0.1:PORT?tls=none` (plain, allowed on loopback only).
    pub fn url(&self, user: &str) -> String {
        format!("smtp://{user}@127.0.0.1:{}?tls=none", self.port)
    }

    /// The URL as for a real server, by the name its certificate carries: `smtps://` for
    /// implicit TLS, else `smtp://` (STARTTLS required).
    pub fn tls_url(&self, user: &str) -> String {
        let scheme = if self.tls == SinkTls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        format!("{scheme}://{user}@localhost:{}", self.port)
    }

    /// Every message received so far, in arrival order.
    pub fn got(&self) -> Result<Vec<Value>> {
        let mut names: Vec<_> = std::fs::read_dir(self.dir.path())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Ok(serde_json::from_slice(&std::fs::read(p)?)?))
            .collect()
    }

    /// Waits until at least `n` messages for which `pred` holds arrived.
    pub async fn wait_for(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got: Vec<Value> = self.got()?.into_iter().filter(|m| pred(m)).collect();
            if got.len() >= n {
                return Ok(got);
            }
            if Instant::now() >= deadline {
                return Err(anyhow!("{} of {n} e-mails after {timeout:?}", got.len()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
