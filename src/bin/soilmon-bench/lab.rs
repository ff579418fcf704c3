//! Lab upload: one valid `--lab-rows` batch (CSV) posted to `POST /v1/lab/batches` of a fresh
//! soilmon, timed from the start of the request to the `201 Created`.
//!
//! Every soilmon the bench starts listens on `SOILMON__HTTP__ADDR=127.0.0.1:<free port>` with
//! a tokens file of the bench's own (`SOILMON__HTTP__TOKENS_FILE`, one random `lab` token;
//! see [`crate::services::BenchEnv`]). The batch references the points the bench imported
//! (`--points`), carries the duplicates and blanks the configured QC rates require
//! (`lab.duplicate_rate`, `lab.blank_rate`, minimums included), and every value is below
//! screening, so it must be accepted whole: any other answer is a bench error carrying the
//! report. The upload goes through [`soilmon::http::client::upload`] (what `soilmon upload`
//! uses); the time therefore includes reading the file back, sending, parsing and checking,
//! the store's binary COPY into `lab_rows`, the readings, incidents and the archive entry, and
//! the COMMIT. Before soilmon starts, the same file is timed through a bare text COPY (the
//! batch's own limit, see [`file_copy_limit`]).

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::load::read_points;
use crate::report::{LabResult, Throughput};
use crate::services::BenchEnv;
use crate::{BenchArgs, BenchError};
use soilmon::config::{LabConfig, Settings};
use soilmon::http::client;

/// The template header of a CSV batch.
pub const HEADER: &str = "batch_id,lab_id,sample_id,point_id,sampled_at,depth_top_cm,\
depth_bottom_cm,ph,metal,value,unit,detected,mdl,method,qc_type,qc_ref";

/// Metals of the generated samples and a base value well below every screening value.
const METALS: [(&str, f64); 5] = [
    ("Pb", 20.0),
    ("Cd", 0.1),
    ("As", 5.0),
    ("Cu", 15.0),
    ("Ni", 12.0),
];

/// How a batch of `rows` rows splits into field samples, duplicates and blanks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Field samples (one metal each).
    pub samples: usize,
    /// Lab duplicates (at least the required number; the remainder of `rows` goes here).
    pub duplicates: usize,
    /// Blanks (exactly the required number).
    pub blanks: usize,
}

/// QC items required for `samples` field samples at `rate`, at least `min` (as `lab::qc`).
fn required(samples: usize, rate: f64, min: usize) -> usize {
    ((samples as f64 * rate - 1e-9).ceil().max(0.0) as usize).max(min)
}

/// The largest number of samples whose required duplicates and blanks fit in `rows`; the
/// rows left over become extra duplicates. `None` when not even one sample fits.
pub fn split(rows: usize, lab: &LabConfig) -> Option<Split> {
    let total = |s: usize| {
        s + required(s, lab.duplicate_rate, lab.min_duplicates)
            + required(s, lab.blank_rate, lab.min_blanks)
    };
    let (mut lo, mut hi) = (0usize, rows);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if total(mid) <= rows {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let samples = lo;
    if samples == 0 {
        return None;
    }
    let blanks = required(samples, lab.blank_rate, lab.min_blanks);
    let duplicates = rows - samples - blanks;
    // Each duplicate duplicates a distinct sample.
    (duplicates <= samples).then_some(Split {
        samples,
        duplicates,
        blanks,
    })
}

/// A valid CSV batch of exactly `rows` rows over `points`: samples spread over the points and
/// over 28 days before `now`, a lab duplicate (same value) of the first samples, blanks at
/// 0.01 mg/kg (MDL 0.05).
pub fn batch_csv(
    batch_id: &str,
    rows: usize,
    points: &[String],
    lab: &LabConfig,
    now: DateTime<Utc>,
) -> Result<String, BenchError> {
    let sp = split(rows, lab).ok_or_else(|| {
        BenchError::Args(format!(
            "--lab-rows {rows} is too small for one sample with its required duplicates and blanks"
        ))
    })?;
    if points.is_empty() {
        return Err(BenchError::Setup("the points file has no points".into()));
    }
    // Sampling times: whole minutes in the 28 days before now, in UTC+8 (the batch's local
    // time), one day before now at the latest.
    let local = now + chrono::Duration::hours(8) - chrono::Duration::days(1);
    let start = local - chrono::Duration::days(28);
    let mut out = String::with_capacity(rows * 110 + HEADER.len() + 1);
    out.push_str(HEADER);
    out.push('\n');
    let value = |i: usize| {
        let (metal, base) = METALS[i % METALS.len()];
        (metal, base * (1.0 + (i % 7) as f64 * 0.01))
    };
    for i in 0..sp.samples {
        let (metal, v) = value(i);
        let point = &points[i % points.len()];
        let minutes = (i * 7 % (28 * 1440)) as i64;
        let when = (start + chrono::Duration::minutes(minutes)).format("%Y-%m-%d %H:%M");
        // The write to a String cannot fail.
        let _ = writeln!(
            out,
            "{batch_id},BENCHLAB,S{i:07},{point},{when},0,20,6.5,{metal},{v:.3},mg/kg,true,0.05,HJ 803,sample,"
        );
    }
    for i in 0..sp.duplicates {
        let (metal, v) = value(i);
        let _ = writeln!(
            out,
            "{batch_id},BENCHLAB,S{i:07}-LD,,,,,,{metal},{v:.3},mg/kg,true,0.05,HJ 803,lab_duplicate,S{i:07}"
        );
    }
    for k in 0..sp.blanks {
        let (metal, _) = value(k);
        let _ = writeln!(
            out,
            "{batch_id},BENCHLAB,BLK{k:07},,,,,,{metal},0.01,mg/kg,true,0.05,HJ 803,blank,"
        );
    }
    Ok(out)
}

/// A log line without its ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads `key=<number>` from a (text-format) log line.
fn log_field(line: &str, key: &str) -> Option<u64> {
    strip_ansi(line)
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.trim_matches('"').parse().ok())
}

/// The lab batch's own COPY limit: the database taking the file as it is, by one text
/// `COPY … (FORMAT csv, HEADER)` into a table of one `text` column per template column (no
/// types, no checks, no judgement, nothing else stored), timed from the start of the COPY
/// to its end; the table is dropped again. What any uploader pays at least to get these rows
/// in.
async fn file_copy_limit(env: &BenchEnv, csv: &str, rows: usize) -> Result<Throughput, BenchError> {
    use futures_util::SinkExt;
    let db = env.db().await?;
    let columns: Vec<String> = HEADER.split(',').map(|c| format!("{c} text")).collect();
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS bench_lab_file; CREATE TABLE bench_lab_file ({})",
        columns.join(", ")
    ))
    .await?;
    let started = Instant::now();
    let sink = db
        .copy_in::<_, std::io::Cursor<Vec<u8>>>(
            "COPY bench_lab_file FROM STDIN (FORMAT csv, HEADER true)",
        )
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(std::io::Cursor::new(csv.as_bytes().to_vec()))
        .await?;
    let copied = sink.finish().await?;
    let elapsed = started.elapsed();
    db.batch_execute("DROP TABLE bench_lab_file").await?;
    if copied != rows as u64 {
        return Err(BenchError::Check(format!(
            "lab file COPY: {copied} rows copied, {rows} expected"
        )));
    }
    Ok(Throughput::new(copied, elapsed))
}

/// Uploads a `rows`-row batch to a fresh soilmon and times it.
pub async fn run(
    env: &BenchEnv,
    settings: &Settings,
    args: &BenchArgs,
) -> Result<LabResult, BenchError> {
    let rows = args.lab_rows;
    let points: Vec<String> = read_points(settings, args)?
        .into_iter()
        .map(|p| p.id)
        .collect();
    let batch_id = format!("BENCH-{}", Utc::now().format("%Y%m%d%H%M%S"));
    let csv = batch_csv(&batch_id, rows, &points, &settings.lab, Utc::now())?;
    let bytes = csv.len() as u64;
    let file = env.dir.join("lab-batch.csv");
    std::fs::write(&file, &csv).map_err(BenchError::io("writing the lab batch"))?;
    let file_copy = file_copy_limit(env, &csv, rows).await?;
    drop(csv);

    let mut s = env.soilmon("lab").await?;
    let server = format!("http://127.0.0.1:{}", env.http_port);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = http
            .get(format!("{server}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Service(format!(
                "soilmon's HTTP API did not answer on {server} within 30 s; log {}",
                s.log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("bench: uploading a {rows}-row lab batch ({bytes} bytes)");
    let started = Instant::now();
    let answer = client::upload(&server, env.lab_token(), &file)
        .await
        .map_err(|e| BenchError::Service(format!("lab upload: {e}")))?;
    let elapsed = started.elapsed();
    let resources = s.resources();
    s.stop().await?;
    let _ = std::fs::remove_file(&file);
    if answer.status != 201 {
        let mut body = answer.body.to_string();
        body.truncate(4000);
        return Err(BenchError::Check(format!(
            "lab upload of {rows} rows answered HTTP {} (expected 201): {body}",
            answer.status
        )));
    }
    let log = std::fs::read_to_string(&s.log).unwrap_or_default();
    let line = log.lines().find(|l| l.contains("lab batch stored"));
    let served = log
        .lines()
        .find(|l| l.contains(" lab batch") && l.contains("store_ms"));
    Ok(LabResult::Done {
        rows: Throughput::new(rows as u64, elapsed),
        file_copy,
        bytes,
        server_check_ms: served.and_then(|l| log_field(l, "read_check_ms")),
        server_store_ms: served.and_then(|l| log_field(l, "store_ms")),
        copy_ms: line.and_then(|l| log_field(l, "copy_ms")),
        readings_ms: line.and_then(|l| log_field(l, "readings_ms")),
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> LabConfig {
        soilmon::config::Settings::load(std::path::Path::new("config/default.toml"))
            .expect("default config")
            .lab
    }

    #[test]
    fn split_meets_the_rates_and_fills_the_rows() {
        let lab = lab();
        let sp = split(100_000, &lab).expect("fits");
        assert_eq!(sp.samples + sp.duplicates + sp.blanks, 100_000);
        assert!(sp.duplicates >= required(sp.samples, lab.duplicate_rate, lab.min_duplicates));
        assert_eq!(
            sp.blanks,
            required(sp.samples, lab.blank_rate, lab.min_blanks)
        );
        for rows in [3, 4, 7, 100, 1001] {
            let sp = split(rows, &lab).expect("fits");
            assert_eq!(sp.samples + sp.duplicates + sp.blanks, rows, "{rows}");
        }
        assert_eq!(split(2, &lab), None);
    }

    #[test]
    fn batch_has_the_rows_asked_for() {
        let csv =
            batch_csv("B", 1000, &["P1".into(), "P2".into()], &lab(), Utc::now()).expect("batch");
        assert_eq!(csv.lines().count(), 1001);
        assert!(csv.starts_with(HEADER));
        assert_eq!(
            log_field("x read_check_ms=12 store_ms=34", "store_ms"),
            Some(34)
        );
        assert_eq!(log_field("x read_check_ms=12", "store_ms"), None);
        let colored = "\u{1b}[3mstore_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m56 x";
        assert_eq!(log_field(colored, "store_ms"), Some(56));
    }
}
