//! HTTP API role helpers: a pipeline with its API on a free port and a tokens file holding
//! one token per role (lab, a 441781 bureau, a city-wide bureau, admin), and a small client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pipeline::Pipeline;
use super::{free_port, random_suffix, wait_until};

/// Token names (and the roles they carry) in the tokens file.
pub const LAB: &str = "lab1";
/// A bureau of county 441781 only.
pub const BUREAU_YC: &str = "bureau-441781";
/// A city-wide bureau.
pub const BUREAU_CITY: &str = "bureau-city";
/// An administrator.
pub const ADMIN: &str = "admin1";

/// A running pipeline with its HTTP API and role tokens.
pub struct ApiService {
    /// The pipeline (broker, database, soilmon).
    pub p: Pipeline,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Token by name (`LAB`, `BUREAU_YC`, `BUREAU_CITY`, `ADMIN`).
    pub tokens: HashMap<&'static str, String>,
    /// The tokens file.
    pub tokens_file: PathBuf,
    /// Holds the tokens file.
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

/// A response: status, `Retry-After` header, body text.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// Body text.
    pub text: String,
}

impl Answer {
    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

impl ApiService {
    /// Starts the pipeline with a fresh tokens file and `env`, waits for `/healthz`.
    pub async fn start(env: &[(&str, &str)]) -> Result<ApiService> {
        let dir = tempfile::Builder::new().prefix("soilmon-api-").tempdir()?;
        let mut tokens = HashMap::new();
        let mut file = String::from("# test tokens\n");
        for (name, rest) in [
            (LAB, "lab lab1"),
            (BUREAU_YC, "bureau bureau-441781 441781"),
            (BUREAU_CITY, "bureau bureau-city *"),
            (ADMIN, "admin admin1"),
        ] {
            let token = format!("{name}-{}{}", random_suffix(), random_suffix());
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            file.push_str(&format!("{hash} {rest}\n"));
            tokens.insert(name, token);
        }
        let tokens_file = dir.path().join("tokens");
        std::fs::write(&tokens_file, file)?;
        let addr = format!("127.0.0.1:{}", free_port());
        let tokens_path = tokens_file.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![
            ("SOILMON__HTTP__ADDR", &addr),
            ("SOILMON__HTTP__TOKENS_FILE", &tokens_path),
        ];
        all.extend_from_slice(env);
        let p = Pipeline::start(&all).await?;
        let s = ApiService {
            p,
            base: format!("http://{addr}"),
            tokens,
            tokens_file,
            dir,
            http: reqwest::Client::new(),
        };
        wait_until("http /healthz", Duration::from_secs(30), || async {
            Ok(s.get("/healthz", None).await?.status == 200)
        })
        .await
        .with_context(|| format!("log:\n{}", s.p.soilmon.log()))?;
        Ok(s)
    }

    /// The token named `name`.
    pub fn token(&self, name: &str) -> &str {
        self.tokens.get(name).map_or("", String::as_str)
    }

    /// A request with an optional bearer token.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "POST" => self
                .http
                .post(url)
                .header("content-type", "text/csv")
                .body(body.unwrap_or("").to_string()),
            "DELETE" => self.http.delete(url),
            _ => self.http.get(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(Answer {
            status,
            retry_after,
            text: resp.text().await?,
        })
    }

    /// GET with an optional bearer token.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<Answer> {
        self.request("GET", path, token, None).await
    }
}
