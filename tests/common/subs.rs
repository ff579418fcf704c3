//! The delivery tests' shared setup: a pipeline whose soilmon delivers with fast retries
//! (secrets, broker files in a temp dir), a 441781 bureau and a city-wide one, and helpers
//! to add subscriptions, read the outbox and the deliveries, and check webhook signatures.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::pipeline::{sample, Pipeline};
use super::receiver::Got;

/// How long the tests wait for a delivery.
pub const WAIT: Duration = Duration::from_secs(60);

/// A pipeline whose soilmon delivers with fast retries, plus a 441781 bureau and a
/// city-wide one.
pub struct Setup {
    /// The pipeline.
    pub p: Pipeline,
    _dir: tempfile::TempDir,
}

/// Starts the pipeline with `extra` overrides and adds the two bureaus.
pub async fn setup(extra: &[(&str, &str)]) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (secrets, pw, acl) = (path("secrets"), path("passwd"), path("acl"));
    let mut env = vec![
        ("SOILMON__DELIVER__SECRETS_FILE", secrets.as_str()),
        ("SOILMON__BROKER__PASSWORD_FILE", pw.as_str()),
        ("SOILMON__BROKER__ACL_FILE", acl.as_str()),
        ("SOILMON__DELIVER__BACKOFF_MIN_MS", "200"),
        ("SOILMON__DELIVER__BACKOFF_MAX_MS", "2000"),
        ("SOILMON__DELIVER__REFRESH_SECS", "1"),
        ("SOILMON__DELIVER__POLL_MS", "50"),
        ("SOILMON__DELIVER__TIMEOUT_MS", "2000"),
        ("SOILMON__DELIVER__LEASE_SECS", "4"),
    ];
    env.extend_from_slice(extra);
    let p = Pipeline::start(&env).await?;
    let s = Setup { p, _dir: dir };
    s.cli(&["bureaus", "add", "yangchun-epb", "--county", "441781"])
        .await?;
    s.cli(&["bureaus", "add", "city-epb", "--all"]).await?;
    Ok(s)
}

impl Setup {
    /// Runs a soilmon command that must succeed; its stdout.
    pub async fn cli(&self, args: &[&str]) -> Result<String> {
        let out = self.p.soilmon.command(args).await?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "soilmon {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Runs a soilmon command that must fail; its stderr.
    pub async fn cli_fails(&self, args: &[&str]) -> Result<String> {
        let out = self.p.soilmon.command(args).await?;
        ensure!(!out.status.success(), "soilmon {args:?} succeeded");
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// `subscriptions add x --bureau B --channel C --url URL EXTRA…`, which must be refused;
    /// its stderr.
    pub async fn add_fails(
        &self,
        bureau: &str,
        channel: &str,
        url: &str,
        extra: &[&str],
    ) -> Result<String> {
        self.cli_fails(&add_args("x", bureau, channel, url, extra))
            .await
    }

    /// `subscriptions add NAME --bureau B --channel webhook --url URL EXTRA…`; the secret.
    pub async fn webhook(
        &self,
        name: &str,
        bureau: &str,
        url: &str,
        extra: &[&str],
    ) -> Result<String> {
        let out = self
            .cli(&add_args(name, bureau, "webhook", url, extra))
            .await?;
        out.lines()
            .find_map(|l| l.strip_prefix("secret: "))
            .map(str::to_string)
            .with_context(|| format!("no secret in {out}"))
    }

    /// The event ids of the alert events in the outbox, in outbox order, of `county` (all
    /// when `None`).
    pub async fn events(&self, county: Option<&str>) -> Result<Vec<String>> {
        let rows = self
            .p
            .db()
            .await?
            .query(
                "SELECT event_id::text FROM outbox WHERE kind = 'alert'
                 AND ($1::text IS NULL OR payload->>'county_code' = $1) ORDER BY id",
                &[&county],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// How many deliveries of `subscription` are in `state`.
    pub async fn count(&self, subscription: &str, state: &str) -> Result<i64> {
        Ok(self
            .p
            .db()
            .await?
            .query_one(
                "SELECT count(*) FROM deliveries d JOIN subscriptions s ON s.id = d.subscription_id
                 WHERE s.name = $1 AND d.state = $2",
                &[&subscription, &state],
            )
            .await?
            .get(0))
    }

    /// Waits until `subscription` has at least `n` deliveries in `state`.
    pub async fn wait_state(&self, subscription: &str, state: &str, n: i64) -> Result<()> {
        super::wait_until(
            &format!("{n} {state} deliveries of {subscription}"),
            WAIT,
            || async { Ok(self.count(subscription, state).await? >= n) },
        )
        .await
        .with_context(|| super::pipeline::tail(&self.p.soilmon.log(), 4000).to_string())
    }
}

/// The receiver's check: the signature header is HMAC-SHA256(secret, timestamp "." body).
pub fn verify(g: &Got, secret: &str) -> bool {
    let ts = g.header("x-soilmon-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&g.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    !ts.is_empty() && g.header("x-soilmon-signature") == want
}

/// The event ids of the requests, in arrival order.
pub fn event_ids(got: &[Got]) -> Vec<String> {
    got.iter()
        .map(|g| {
            g.json()["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Event ids in first-arrival order, duplicates (redeliveries) dropped.
pub fn first_arrivals(got: &[Got]) -> Vec<String> {
    let mut seen = HashSet::new();
    event_ids(got)
        .into_iter()
        .filter(|e| seen.insert(e.clone()))
        .collect()
}

/// Paddy pH 6.2 in 441781 (Cd screening 0.4, intervention 2.0; Pb 100 / 500) and dry land
/// pH 7.0 in 441702 (Cd 0.3 / 3.0): five alert events, four of them in 441781, one of those
/// a Cd intervention.
pub fn five_alerts(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let t = "441781-T-0001";
    vec![
        sample(
            "st01",
            &format!("{prefix}1"),
            t,
            "2026-11-28T09:00:00+08:00",
            &[("Cd", 0.45)],
        ),
        sample(
            "st01",
            &format!("{prefix}2"),
            t,
            "2026-11-28T10:00:00+08:00",
            &[("Cd", 2.5)],
        ),
        sample(
            "st01",
            &format!("{prefix}3"),
            t,
            "2026-11-28T11:00:00+08:00",
            &[("Pb", 600.0)],
        ),
        sample(
            "st02",
            &format!("{prefix}4"),
            "441702-T-0001",
            "2026-11-28T11:00:00+08:00",
            &[("Cd", 5.0)],
        ),
        sample(
            "st01",
            &format!("{prefix}5"),
            t,
            "2026-11-28T12:00:00+08:00",
            &[("Cd", 0.5)],
        ),
    ]
}

/// The arguments of `subscriptions add NAME --bureau B --channel C --url URL EXTRA…`.
fn add_args<'a>(
    name: &'a str,
    bureau: &'a str,
    channel: &'a str,
    url: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "subscriptions",
        "add",
        name,
        "--bureau",
        bureau,
        "--channel",
        channel,
        "--url",
        url,
    ];
    args.extend_from_slice(extra);
    args
}
