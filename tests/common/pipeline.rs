//! A whole soilmon pipeline for one test: its own broker, a fresh database with the test
//! point registry, and a running `soilmon run`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use super::{wait_until, Broker, Soilmon, Subscriber, TestDb};

/// The registry the pipeline tests use (county, land use and pH chosen so that the expected
/// thresholds can be read straight from GB 15618 / GB 36600).
pub const TEST_POINTS: &str = "point_id,name,county_code,lon,lat,point_type,land_use,ph
441781-T-0001,Yangchun paddy,441781,111.78,22.17,risk,paddy,6.2
441781-T-0002,Yangchun school site,441781,111.79,22.18,basic,development_first,
441781-T-0003,Yangchun orchard,441781,111.80,22.19,basic,orchard,
441702-T-0001,Jiangcheng dry land,441702,111.95,21.86,basic,dry_land,7.0
";

/// A running pipeline.
pub struct Pipeline {
    /// The test's broker.
    pub broker: Broker,
    /// The service under test.
    pub soilmon: Soilmon,
    /// Database URL.
    pub db_url: String,
    /// Keeps the test database (when created by the pipeline) alive.
    _db: Option<TestDb>,
    _points: tempfile::NamedTempFile,
}

impl Pipeline {
    /// Broker + fresh database + migrate + test points + `soilmon run`, ready to receive.
    pub async fn start(env: &[(&str, &str)]) -> Result<Pipeline> {
        let db = TestDb::create().await?;
        let url = db.url.clone();
        Self::start_on(url, Some(db), env).await
    }

    /// Same, on a given database URL (e.g. a private cluster).
    pub async fn start_on(
        db_url: String,
        db: Option<TestDb>,
        env: &[(&str, &str)],
    ) -> Result<Pipeline> {
        let broker = Broker::start().await?;
        let mut soilmon = Soilmon::new(&db_url, broker.port);
        for (k, v) in env {
            soilmon.set_env(k, v);
        }
        let points = tempfile::Builder::new().suffix(".csv").tempfile()?;
        std::fs::write(points.path(), TEST_POINTS)?;
        let path = points.path().to_string_lossy().into_owned();
        let out = soilmon.command(&["points", "import", &path]).await?;
        ensure!(
            out.status.success(),
            "points import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut p = Pipeline {
            broker,
            soilmon,
            db_url,
            _db: db,
            _points: points,
        };
        p.soilmon.start().await?;
        p.wait_ready(1).await?;
        Ok(p)
    }

    /// Waits until the service has logged its `n`-th subscription (one per connection).
    pub async fn wait_ready(&self, n: usize) -> Result<()> {
        wait_until("soilmon subscribed", Duration::from_secs(30), || async {
            Ok(self.soilmon.log().matches("ready: subscribed").count() >= n)
        })
        .await
        .with_context(|| format!("log:\n{}", self.soilmon.log()))
    }

    /// A database client.
    pub async fn db(&self) -> Result<tokio_postgres::Client> {
        super::pg_connect(&self.db_url).await
    }

    /// Runs a `SELECT count(*) …` and returns the number.
    pub async fn count(&self, sql: &str) -> Result<i64> {
        Ok(self.db().await?.query_one(sql, &[]).await?.get(0))
    }

    /// Waits until `sql` (a count) returns at least `n`.
    pub async fn wait_count(&self, sql: &str, n: i64, timeout: Duration) -> Result<()> {
        wait_until(&format!("{sql} >= {n}"), timeout, || async {
            Ok(self.count(sql).await? >= n)
        })
        .await
        .with_context(|| format!("soilmon log:\n{}", tail(&self.soilmon.log(), 4000)))
    }

    /// A subscriber on this pipeline's broker.
    pub async fn subscribe(&self, filter: &str) -> Result<Subscriber> {
        Subscriber::start(self.broker.port, filter).await
    }

    /// Publishes and waits for the broker's PUBACKs.
    pub async fn publish(&self, msgs: Vec<(String, Vec<u8>)>) -> Result<()> {
        super::publish_all(self.broker.port, msgs).await
    }
}

/// The last `n` bytes of a log (on a char boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The readings topic of a station.
pub fn readings_topic(station: &str) -> String {
    format!("soil/v1/stations/{station}/readings")
}

/// A well-formed station message with the given readings (metal, value in mg/kg).
pub fn sample(
    station: &str,
    msg_id: &str,
    point: &str,
    sampled_at: &str,
    readings: &[(&str, f64)],
) -> (String, Vec<u8>) {
    let readings: Vec<Value> = readings
        .iter()
        .map(|(m, v)| json!({"metal": m, "value": v, "unit": "mg/kg"}))
        .collect();
    let body = json!({
        "msg_id": msg_id, "point_id": point, "sampled_at": sampled_at,
        "depth_cm": [0, 20], "method": "XRF", "readings": readings,
    });
    (readings_topic(station), body.to_string().into_bytes())
}

/// Parses an MQTT payload as JSON (panics with the payload on failure: test code).
pub fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(payload)))
}
