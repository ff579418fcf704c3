//! Lab upload (`POST /v1/lab/batches`, CSV): probed, and skipped while the build under test
//! has no lab HTTP API.
//!
//! The bench starts every soilmon with `SOILMON__HTTP__LISTEN=127.0.0.1:<free port>` (a key
//! this build ignores). If nothing listens there, or the route answers 404, the phase is
//! reported as skipped. Once the lab API is merged, the upload of a `--lab-rows` batch is to be
//! wired here against its CSV contract, timed and compared with the COPY limit.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::services::BenchEnv;
use super::{BenchError, LabResult};

/// The status line's code of an HTTP response, if it is one.
pub fn status_code(response: &str) -> Option<u16> {
    let line = response.lines().next()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Sends an empty CSV to the lab route; `None` if no HTTP server answered.
async fn probe(port: u16) -> Option<u16> {
    let attempt = async {
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!(
            "POST /v1/lab/batches HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: text/csv\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        sock.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        sock.read_to_end(&mut buf).await.ok()?;
        status_code(&String::from_utf8_lossy(&buf))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

/// Runs (for now: probes) the lab-upload phase against a fresh soilmon.
pub async fn run(env: &BenchEnv) -> Result<LabResult, BenchError> {
    let mut s = env.soilmon("lab").await?;
    let status = probe(env.http_port).await;
    s.stop().await?;
    let reason = match status {
        None | Some(404) => "skipped: lab upload API not available in this build".to_string(),
        Some(code) => format!(
            "skipped: lab upload API answered {code} to a probe, but the bench does not drive \
             its CSV contract yet"
        ),
    };
    Ok(LabResult::Skipped { reason })
}

#[cfg(test)]
mod tests {
    use super::status_code;

    #[test]
    fn reads_status_line() {
        assert_eq!(status_code("HTTP/1.1 404 Not Found\r\n\r\n"), Some(404));
        assert_eq!(status_code("HTTP/1.1 201 Created\r\nX: y\r\n"), Some(201));
        assert_eq!(status_code("garbage"), None);
        assert_eq!(status_code(""), None);
    }
}
