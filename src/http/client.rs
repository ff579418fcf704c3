//! The client side of `soilmon upload`: sends a batch file to the API (streamed, with a
//! progress indicator on a terminal) and formats the report for lab staff.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;

use serde::Deserialize as _;
use serde_json::Value;

use crate::lab::ReadReport;

/// Errors of the upload client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The request failed.
    #[error("request: {0}")]
    Request(#[from] reqwest::Error),
}

/// The server's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body (or `{"error": text}` when the body was not JSON), as received (printed by
    /// `--json`); [`summary`] reads it as a [`ReadReport`].
    pub body: Value,
}

/// Uploads `file` to `{server}/v1/lab/batches`. `.json` files are sent as JSON, `.xlsx` as
/// an Excel workbook, anything else as CSV.
pub async fn upload(server: &str, token: &str, file: &Path) -> Result<Answer, ClientError> {
    let data = std::fs::read(file).map_err(|source| ClientError::Io {
        path: file.display().to_string(),
        source,
    })?;
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let content_type = match ext.as_str() {
        "json" => "application/json",
        "xlsx" => crate::lab::xlsx::CONTENT_TYPE,
        _ => "text/csv; charset=utf-8",
    };
    let total = data.len();
    let show = std::io::stderr().is_terminal() && total > 1_000_000;
    let chunks: Vec<Vec<u8>> = data.chunks(256 * 1024).map(<[u8]>::to_vec).collect();
    let mut sent = 0usize;
    let stream = futures_util::stream::iter(chunks.into_iter().map(move |c| {
        sent += c.len();
        if show {
            eprint!(
                "\ruploading {:>3} % of {} bytes",
                sent * 100 / total.max(1),
                total
            );
            if sent == total {
                eprintln!("; checking…");
            }
        }
        Ok::<Vec<u8>, std::io::Error>(c)
    }));
    let url = format!("{}/v1/lab/batches", server.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::CONTENT_LENGTH, total)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    let body = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({ "error": text }));
    Ok(Answer { status, body })
}

/// A readable summary of an answer, showing at most `max_errors` errors.
pub fn summary(a: &Answer, max_errors: usize) -> String {
    let mut out = String::new();
    let verdict = match a.status {
        201 => "ACCEPTED",
        200 => "ACCEPTED (already uploaded with the same content; nothing stored twice)",
        422 => "REJECTED (nothing stored)",
        409 => "REFUSED: this batch_id was accepted before with different content",
        401 => "REFUSED: missing or invalid token",
        403 => "REFUSED: the token's role may not upload",
        413 => "REFUSED: the file is larger than the server accepts",
        _ => "FAILED",
    };
    out.push_str(&format!("{verdict} (HTTP {})\n", a.status));
    if let Some(e) = a.body["error"].as_str() {
        out.push_str(&format!("  {e}\n"));
        return out;
    }
    match ReadReport::deserialize(&a.body) {
        Ok(report) => out.push_str(&report_lines(&report, max_errors)),
        Err(e) => out.push_str(&format!("  unreadable report: {e}\n")),
    }
    out
}

/// The lines of a report after the verdict.
fn report_lines(r: &ReadReport, max_errors: usize) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let map = |m: &BTreeMap<Cow<'static, str>, usize>| -> String {
        let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(", ")
        }
    };
    let mut out = format!(
        "  batch {}  lab {}  rows {}\n",
        text(&r.batch_id),
        text(&r.lab_id),
        r.rows
    );
    out.push_str(&format!("  rows by type: {}\n", map(&r.by_qc_type)));
    out.push_str(&format!("  judgements:   {}\n", map(&r.by_judgement)));
    out.push_str(&format!("  alerts:       {}\n", r.alerts));
    let qc = &r.qc;
    out.push_str(&format!(
        "  QC: samples {}; duplicates {}/{} required, {} compared, {} failed; blanks {}/{} required, {} failed; CRM {} checked, {} failed; spikes {} checked, {} failed\n",
        qc.samples,
        qc.duplicates.present, qc.duplicates.required,
        qc.duplicates.checked, qc.duplicates.failed,
        qc.blanks.present, qc.blanks.required, qc.blanks.failed,
        qc.crm.checked, qc.crm.failed,
        qc.spikes.checked, qc.spikes.failed,
    ));
    if !r.errors.is_empty() {
        out.push_str(&format!("  {} error(s):\n", r.errors.len()));
    }
    for e in r.errors.iter().take(max_errors) {
        let line = e.line.map_or("batch".to_string(), |l| format!("line {l}"));
        let col = e
            .column
            .as_ref()
            .map_or(String::new(), |c| format!(" [{c}]"));
        out.push_str(&format!("    {line}{col} {}: {}\n", e.code, e.detail));
    }
    if r.errors.len() > max_errors {
        out.push_str(&format!(
            "    … and {} more (use --json for all)\n",
            r.errors.len() - max_errors
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_shows_verdict_counts_and_first_errors() {
        let body = serde_json::json!({
            "batch_id": "B1", "lab_id": "L1", "rows": 3, "status": "rejected",
            "received_at": "2024-05-01T08:00:00Z",
            "by_qc_type": {"sample": 3}, "by_judgement": {}, "alerts": 0,
            "qc": {"samples": 3, "duplicates": {"present": 0, "required": 1, "checked": 0, "failed": 0},
                   "blanks": {"present": 0, "required": 1, "failed": 0},
                   "crm": {"checked": 0, "failed": 0}, "spikes": {"checked": 0, "failed": 0}},
            "errors": [
                {"code": "unknown_metal", "line": 2, "column": "metal", "detail": "unknown metal \"Fe\""},
                {"code": "bad_type", "line": 3, "column": "value", "detail": "\"x\" is not a finite number"},
                {"code": "qc_blank_rate", "line": null, "column": null, "detail": "0 blanks"}
            ]
        });
        let text = summary(&Answer { status: 422, body }, 2);
        assert!(
            text.starts_with("REJECTED (nothing stored) (HTTP 422)"),
            "{text}"
        );
        assert!(
            text.contains("line 2 [metal] unknown_metal: unknown metal \"Fe\""),
            "{text}"
        );
        assert!(text.contains("line 3 [value] bad_type"), "{text}");
        assert!(text.contains("… and 1 more (use --json for all)"), "{text}");
        let text = summary(
            &Answer {
                status: 401,
                body: serde_json::json!({"error": "missing or invalid bearer token"}),
            },
            5,
        );
        assert!(text.contains("REFUSED: missing or invalid token"), "{text}");
    }
}
