//! A real browser for the console tests (included by `tests/console.rs` only): Debian's `chromedriver` (package
//! `chromium-driver`, installed by `deploy/local/services.sh`) started on a free loopback
//! port, driving headless `chromium` over WebDriver with `fantoccini`.
//!
//! | variable | default |
//! |---|---|
//! | `SOILMON_CHROMEDRIVER` | `/usr/bin/chromedriver` |
//! | `SOILMON_CHROMIUM` | `/usr/bin/chromium` |

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::common::{free_port, repo_path, wait_until};

/// A chromedriver process and one browser session.
pub struct Browser {
    /// The WebDriver client.
    pub c: Client,
    driver: Child,
    /// Where downloads land.
    pub downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_string())
}

impl Browser {
    /// Starts chromedriver on 127.0.0.1 and a headless Chromium session (1280×900).
    pub async fn start() -> Result<Browser> {
        let port = free_port();
        let driver = Command::new(env_or("SOILMON_CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (deploy/local/services.sh installs chromium-driver)")?;
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver", Duration::from_secs(20), || async {
            Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok())
        })
        .await?;
        let profile = tempfile::Builder::new()
            .prefix("soilmon-chrome-")
            .tempdir()?;
        let downloads = tempfile::Builder::new().prefix("soilmon-dl-").tempdir()?;
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": env_or("SOILMON_CHROMIUM", "/usr/bin/chromium"),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--lang=zh-CN", "--no-first-run", "--disable-extensions",
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": downloads.path().to_string_lossy(),
                    "download.prompt_for_download": false,
                }
            }
        });
        let caps = caps.as_object().cloned().unwrap_or_default();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&url)
            .await
            .map_err(|e| anyhow!("webdriver session: {e}"))?;
        Ok(Browser {
            c,
            driver,
            downloads,
            _profile: profile,
        })
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.c
            .goto(url)
            .await
            .with_context(|| format!("goto {url}"))
    }

    /// Waits (up to 20 s) for an element matching `css`.
    pub async fn wait_css(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.c
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .with_context(|| format!("waiting for {css}"))
    }

    /// Elements matching `css` now.
    pub async fn all(&self, css: &str) -> Result<Vec<fantoccini::elements::Element>> {
        Ok(self.c.find_all(Locator::Css(css)).await?)
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        Ok(self.wait_css(css).await?.text().await?)
    }

    /// Runs `script` in the page and returns its value.
    pub async fn js(&self, script: &str) -> Result<serde_json::Value> {
        Ok(self.c.execute(script, vec![]).await?)
    }

    /// Signs in on `base` with `token`, waits for the first page after it.
    pub async fn sign_in(&self, base: &str, token: &str) -> Result<()> {
        self.goto(&format!("{base}/console/login")).await?;
        self.wait_css("#token").await?.send_keys(token).await?;
        self.wait_css("#signin").await?.click().await?;
        self.wait_css("#who").await?;
        Ok(())
    }

    /// Saves a PNG screenshot of the page as `docs/screenshots/{name}.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.c.screenshot().await?;
        let dir = repo_path("docs/screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// The value of the session cookie (to replay requests outside the browser).
    pub async fn cookie(&self, name: &str) -> Result<String> {
        let c = self.c.get_named_cookie(name).await?;
        Ok(c.value().to_string())
    }

    /// Waits (up to 20 s) for a finished download named `name` and returns its bytes.
    pub async fn download(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.downloads.path().join(name);
        wait_until(
            &format!("download {name}"),
            Duration::from_secs(20),
            || async { Ok(path.exists()) },
        )
        .await?;
        Ok(std::fs::read(&path)?)
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) -> Result<()> {
        let _ = self.c.clone().close().await;
        let _ = self.driver.kill().await;
        Ok(())
    }
}
