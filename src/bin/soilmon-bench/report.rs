//! What one bench run measured ([`Report`] and its parts, serialised as the JSON of
//! `--json-out`) and the table printed at the end ([`render`]).

use std::time::Duration;

use serde::Serialize;

/// Peak memory and CPU of the soilmon process during one phase.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resources {
    /// Peak resident set size (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// User + system CPU time, seconds.
    pub cpu_seconds: f64,
}

/// Throughput of one measured run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Throughput {
    /// Items (messages or rows).
    pub items: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Items per second.
    pub per_second: f64,
}

impl Throughput {
    /// `items` in `elapsed`.
    pub fn new(items: u64, elapsed: Duration) -> Throughput {
        let seconds = elapsed.as_secs_f64();
        Throughput {
            items,
            seconds,
            per_second: if seconds > 0.0 {
                items as f64 / seconds
            } else {
                0.0
            },
        }
    }
}

/// Result of the drain phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DrainResult {
    /// Messages drained (N).
    pub messages: u64,
    /// Readings committed (N × 8).
    pub readings: Throughput,
    /// Messages per second.
    pub messages_per_second: f64,
    /// Seconds from spawning soilmon to `ready: subscribed`.
    pub startup_seconds: f64,
    /// Messages redelivered to soilmon's session after it was stopped (must be 0: every
    /// message was acked).
    pub redelivered_after_stop: u64,
    /// Resources of the soilmon process.
    pub resources: Resources,
}

/// Result of the alert-latency phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyResult {
    /// Target publish rate, messages/s.
    pub target_rate: f64,
    /// Achieved publish rate, messages/s.
    pub achieved_rate: f64,
    /// Messages published.
    pub published: u64,
    /// Alerts received by the bureau subscriber and matched to a publish.
    pub alerts: u64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
    /// Resources of the soilmon process.
    pub resources: Resources,
}

/// Result of the lab-upload phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LabResult {
    /// The phase did not run.
    Skipped {
        /// Why.
        reason: String,
    },
    /// The batch was uploaded (201).
    Done {
        /// Rows and time (request start to 201).
        rows: Throughput,
        /// The batch file's own COPY limit: the same CSV taken by one text COPY into a table
        /// of `text` columns.
        file_copy: Throughput,
        /// Size of the CSV body, bytes.
        bytes: u64,
        /// Server side: reading the body, parsing and checking, ms (from its log).
        server_check_ms: Option<u64>,
        /// Server side: the store transaction up to COMMIT, ms (from its log).
        server_store_ms: Option<u64>,
        /// Of which: binary COPY of every row into `lab_rows`, ms.
        copy_ms: Option<u64>,
        /// Of which: inserting the field samples into `readings`, ms.
        readings_ms: Option<u64>,
        /// Resources of the soilmon process.
        resources: Resources,
    },
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Machine description (CPU model, cores, memory).
    pub machine: Machine,
    /// Backlog size, messages.
    pub messages: u64,
    /// Broker limit: messages drained by a bare subscriber.
    pub broker_limit: Option<Throughput>,
    /// Database limit: readings written by binary COPY.
    pub copy_limit: Option<Throughput>,
    /// soilmon end to end.
    pub drain: Option<DrainResult>,
    /// Alert latency.
    pub latency: Option<LatencyResult>,
    /// Lab upload.
    pub lab: Option<LabResult>,
    /// Deliveries to webhooks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<crate::deliveries::DeliveriesResult>,
}

/// The machine the run happened on.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Machine {
    /// CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// UTC time of the run.
    pub started_at: String,
}

impl Machine {
    /// Describes this machine.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_gib: mem_kib / 1024.0 / 1024.0,
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// The `q`-quantile (0 ≤ q ≤ 1) of `sorted` by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `a / b` as a percentage, when both are known.
fn pct(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.0} %", 100.0 * a / b),
        _ => "-".into(),
    }
}

fn res(r: &Resources) -> String {
    format!("{:.1} MiB, {:.1} CPU s", r.peak_rss_mib, r.cpu_seconds)
}

/// One row of the table: what, figure, detail, fraction of the limits.
type Row = [String; 4];

/// Renders the report as a readable table.
pub fn render(r: &Report) -> String {
    let copy = r.copy_limit.as_ref().map(|c| c.per_second);
    let broker = r.broker_limit.as_ref().map(|c| c.per_second);
    let mut rows: Vec<Row> = limit_rows(r);
    if let Some(d) = &r.drain {
        rows.extend(drain_rows(d, copy, broker));
    }
    if let Some(l) = &r.latency {
        rows.extend(latency_rows(l));
    }
    if let Some(lab) = &r.lab {
        rows.extend(lab_rows(lab, copy));
    }
    if let Some(d) = &r.deliveries {
        rows.extend(delivery_rows(d));
    }
    let m = &r.machine;
    let title = format!(
        "soilmon bench — {} messages × 8 readings — {} ({} CPUs, {:.1} GiB) — {}\n",
        r.messages, m.cpu, m.cpus, m.mem_gib, m.started_at
    );
    title + &table(&rows)
}

/// The rows of the broker and COPY limits.
fn limit_rows(r: &Report) -> Vec<Row> {
    let mut rows = Vec::new();
    if let Some(b) = &r.broker_limit {
        rows.push([
            "limit: broker drain (bare subscriber)".into(),
            format!(
                "{:.0} msg/s = {:.0} readings/s",
                b.per_second,
                b.per_second * 8.0
            ),
            format!("{} msgs in {:.2} s", b.items, b.seconds),
            "".into(),
        ]);
    }
    if let Some(c) = &r.copy_limit {
        rows.push([
            "limit: database binary COPY".into(),
            format!("{:.0} rows/s", c.per_second),
            format!("{} rows in {:.2} s", c.items, c.seconds),
            "".into(),
        ]);
    }
    rows
}

/// The rows of the drain phase, with its fractions of the `copy` and `broker` limits.
fn drain_rows(d: &DrainResult, copy: Option<f64>, broker: Option<f64>) -> [Row; 2] {
    [
        [
            "soilmon backlog drain".into(),
            format!(
                "{:.0} readings/s ({:.0} msg/s)",
                d.readings.per_second, d.messages_per_second
            ),
            format!(
                "{} readings in {:.2} s; {} redelivered after stop",
                d.readings.items, d.readings.seconds, d.redelivered_after_stop
            ),
            format!(
                "{} of COPY, {} of broker",
                pct(d.readings.per_second, copy),
                pct(d.messages_per_second, broker)
            ),
        ],
        [
            "  soilmon resources (drain)".into(),
            res(&d.resources),
            format!("startup {:.2} s", d.startup_seconds),
            "".into(),
        ],
    ]
}

/// The rows of the alert-latency phase.
fn delivery_rows(d: &crate::deliveries::DeliveriesResult) -> [Row; 2] {
    [
        [
            "webhook latency (publish → request)".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                d.p50_ms, d.p99_ms, d.max_ms
            ),
            format!(
                "{} requests of {} deliveries, {} subscriptions, {} msgs; {} pending at end",
                d.requests, d.deliveries, d.subscriptions, d.published, d.pending_at_end
            ),
            "".into(),
        ],
        [
            format!("deliveries to a {} ms receiver", d.slow_ms),
            format!(
                "{:.1}/s sequential, {:.1}/s at concurrency {}",
                d.slow_rate_sequential, d.slow_rate_concurrent, d.slow_concurrency
            ),
            "".into(),
            "".into(),
        ],
    ]
}

fn latency_rows(l: &LatencyResult) -> [Row; 2] {
    [
        [
            "alert latency".into(),
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                l.p50_ms, l.p99_ms, l.max_ms
            ),
            format!(
                "{} alerts; {} msgs at {:.0}/s (target {:.0})",
                l.alerts, l.published, l.achieved_rate, l.target_rate
            ),
            "".into(),
        ],
        [
            "  soilmon resources (latency)".into(),
            res(&l.resources),
            "".into(),
            "".into(),
        ],
    ]
}

/// The rows of the lab-upload phase, with its fraction of the batch file's own COPY limit
/// and of the readings' `copy` limit.
fn lab_rows(lab: &LabResult, copy: Option<f64>) -> Vec<Row> {
    match lab {
        LabResult::Skipped { reason } => {
            vec![["lab upload".into(), reason.clone(), "".into(), "".into()]]
        }
        LabResult::Done {
            rows: t,
            file_copy,
            bytes,
            server_check_ms,
            server_store_ms,
            copy_ms,
            readings_ms,
            resources,
        } => {
            let ms = |v: &Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
            vec![
                [
                    "lab upload (one batch, HTTP 201)".into(),
                    format!("{:.0} rows/s", t.per_second),
                    format!(
                        "{} rows ({:.1} MB) in {:.2} s",
                        t.items,
                        *bytes as f64 / 1e6,
                        t.seconds
                    ),
                    format!(
                        "{} of the file's COPY, {} of COPY",
                        pct(t.per_second, Some(file_copy.per_second)),
                        pct(t.per_second, copy)
                    ),
                ],
                [
                    "  limit: the batch file by text COPY".into(),
                    format!("{:.0} rows/s", file_copy.per_second),
                    format!("{} rows in {:.2} s", file_copy.items, file_copy.seconds),
                    "".into(),
                ],
                [
                    "  soilmon resources (lab)".into(),
                    res(resources),
                    format!(
                        "server: check {}, store {} (COPY {}, readings {})",
                        ms(server_check_ms),
                        ms(server_store_ms),
                        ms(copy_ms),
                        ms(readings_ms)
                    ),
                    "".into(),
                ],
            ]
        }
    }
}

/// The rows as aligned columns separated by ` | `, one line each.
fn table(rows: &[Row]) -> String {
    let mut widths = [0usize; 4];
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (w, c)) in widths.iter().zip(row).enumerate() {
            if i > 0 {
                line.push_str(" | ");
            }
            line.push_str(c);
            line.push_str(&" ".repeat(w - c.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn throughput_of_zero_time_is_zero() {
        assert_eq!(Throughput::new(10, Duration::ZERO).per_second, 0.0);
        assert_eq!(Throughput::new(10, Duration::from_secs(2)).per_second, 5.0);
    }

    #[test]
    fn report_renders_fractions_and_skips() {
        let r = Report {
            machine: Machine {
                cpu: "Test CPU".into(),
                cpus: 2,
                mem_gib: 4.0,
                started_at: "2026-01-01T00:00:00Z".into(),
            },
            messages: 10,
            broker_limit: Some(Throughput::new(10, Duration::from_secs(1))),
            copy_limit: Some(Throughput::new(160, Duration::from_secs(1))),
            drain: Some(DrainResult {
                messages: 10,
                readings: Throughput::new(80, Duration::from_secs(1)),
                messages_per_second: 10.0,
                startup_seconds: 0.1,
                redelivered_after_stop: 0,
                resources: Resources::default(),
            }),
            latency: None,
            lab: Some(LabResult::Done {
                rows: Throughput::new(40, Duration::from_secs(1)),
                file_copy: Throughput::new(80, Duration::from_secs(1)),
                bytes: 4000,
                server_check_ms: Some(300),
                server_store_ms: Some(600),
                copy_ms: None,
                readings_ms: Some(200),
                resources: Resources::default(),
            }),
            deliveries: None,
        };
        let text = render(&r);
        assert!(text.contains("50 % of COPY, 100 % of broker"), "{text}");
        assert!(
            text.contains("50 % of the file's COPY, 25 % of COPY"),
            "{text}"
        );
        assert!(
            text.contains("check 300 ms, store 600 ms (COPY -, readings 200 ms)"),
            "{text}"
        );
        assert!(text.contains("Test CPU (2 CPUs"), "{text}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["lab"]["status"], "done");
        assert_eq!(json["copy_limit"]["per_second"], 160.0);
    }
}
