//! Lab-upload helpers: a pipeline with its HTTP API on a free port and a tokens file of its
//! own, an HTTP client, and batch builders over `pipeline::TEST_POINTS`.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pipeline::Pipeline;
use super::{free_port, random_suffix, wait_until};

/// The template header.
pub const HEADER: &str = "batch_id,lab_id,sample_id,point_id,sampled_at,depth_top_cm,depth_bottom_cm,ph,metal,value,unit,detected,mdl,method,qc_type,qc_ref";

/// A running pipeline with its HTTP API.
pub struct LabService {
    /// The pipeline (broker, database, soilmon).
    pub p: Pipeline,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// A token with role `lab`.
    pub lab_token: String,
    /// A token with role `admin` (may read batch reports, not upload).
    pub viewer_token: String,
    /// Holds the tokens file.
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl LabService {
    /// Starts the pipeline with `SOILMON__HTTP__ADDR` on a free port, a fresh tokens file
    /// and `env`, and waits until `/healthz` answers.
    pub async fn start(env: &[(&str, &str)]) -> Result<LabService> {
        let dir = tempfile::Builder::new().prefix("soilmon-lab-").tempdir()?;
        let lab_token = format!("lab-{}{}", random_suffix(), random_suffix());
        let viewer_token = format!("viewer-{}{}", random_suffix(), random_suffix());
        let hash = |t: &str| hex::encode(Sha256::digest(t.as_bytes()));
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "# test tokens\n{} lab test-lab\n{} admin test-viewer\n",
                hash(&lab_token),
                hash(&viewer_token)
            ),
        )?;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let tokens_path = tokens.to_string_lossy().into_owned();
        let mut all: Vec<(&str, &str)> = vec![
            ("SOILMON__HTTP__ADDR", &addr),
            ("SOILMON__HTTP__TOKENS_FILE", &tokens_path),
        ];
        all.extend_from_slice(env);
        let p = Pipeline::start(&all).await?;
        let s = LabService {
            p,
            base: format!("http://{addr}"),
            lab_token,
            viewer_token,
            dir,
            http: reqwest::Client::new(),
        };
        wait_until("http /healthz", Duration::from_secs(30), || async {
            Ok(s.get("/healthz", None).await?.0 == 200)
        })
        .await
        .with_context(|| format!("log:\n{}", s.p.soilmon.log()))?;
        Ok(s)
    }

    /// GET a path; returns the status and the body text.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// POST a batch body; returns the status and the JSON body (Null if not JSON).
    pub async fn post(
        &self,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/v1/lab/batches", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// POST a CSV batch with the lab token.
    pub async fn upload(&self, csv: &str) -> Result<(u16, Value)> {
        self.post(Some(&self.lab_token), "text/csv", csv.as_bytes().to_vec())
            .await
    }
}

/// A clean batch over the test points: two field samples (one Cd exceedance at the paddy
/// point 441781-T-0001), a field duplicate, a lab duplicate, a blank, a CRM and a spike.
pub fn clean_batch(batch: &str) -> String {
    let rows = [
        "S1,441781-T-0001,2026-11-20 09:30,0,20,6.2,Cd,0.45,mg/kg,true,0.07,HJ 803,sample,",
        "S1,441781-T-0001,2026-11-20 09:30,0,20,6.2,Pb,50,mg/kg,true,2,HJ 803,sample,",
        "S2,441702-T-0001,2026-11-20 10:00,0,20,7.0,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,",
        "S1-FD,441781-T-0001,2026-11-20 09:30,0,20,6.2,Cd,0.47,mg/kg,true,0.07,HJ 803,field_duplicate,S1",
        "S2-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S2",
        "BLK1,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,",
        "CRM1,,,,,,Pb,550,mg/kg,true,2,HJ 803,crm,GBW07405:552:523:581",
        "S1-SP,,,,,,Pb,95,mg/kg,true,2,HJ 803,spike,S1:50",
    ];
    batch_of(batch, &rows)
}

/// A CSV body: header, then `batch,LAB1,` + each row.
pub fn batch_of(batch: &str, rows: &[&str]) -> String {
    let mut out = format!("{HEADER}\n");
    for r in rows {
        out.push_str(&format!("{batch},LAB1,{r}\n"));
    }
    out
}

/// The codes of a report's errors, with their lines.
pub fn codes(report: &Value) -> Vec<(String, Option<u64>)> {
    report["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["code"].as_str().unwrap_or("").to_string(),
                        e["line"].as_u64(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
