//! `soilmon quarantine list|show|replay`: browse refused station messages and replay them
//! through the ingest path once their cause is fixed.

use anyhow::{bail, Context as _, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use soilmon::config::Settings;
use soilmon::ingest::replay;
use soilmon::store::quarantine::{self, Filter};

use super::{admin_connect, connect, write_lines};

#[derive(Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined messages, newest first.
    List {
        /// Only this reason code (e.g. unknown_point).
        #[arg(long)]
        reason: Option<String>,
        /// Only this station.
        #[arg(long)]
        station: Option<String>,
        /// Received on or after (YYYY-MM-DD, read as UTC, or RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Received before (YYYY-MM-DD, read as UTC, or RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Only entries not yet resolved by a replay.
        #[arg(long)]
        open: bool,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Show one entry: its fields, its replays and its payload (control characters and
    /// invalid UTF-8 escaped, so a hostile payload cannot drive the terminal).
    Show {
        /// Quarantine id.
        id: i64,
        /// Print at most this many payload bytes (0: all).
        #[arg(long, default_value_t = 4096)]
        max_bytes: usize,
    },
    /// Replay entries through parse → judge → store; prints each outcome. Idempotent: a
    /// message is stored once however often it is replayed.
    Replay {
        /// Quarantine ids.
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Who replays (recorded with each replay).
        #[arg(long, env = "USER")]
        by: String,
    },
}

/// Runs one `soilmon quarantine` command.
pub async fn dispatch(settings: &Settings, c: QuarantineCommand) -> Result<()> {
    match c {
        QuarantineCommand::List {
            reason,
            station,
            since,
            until,
            open,
            limit,
        } => {
            let filter = Filter {
                reason,
                station,
                since: since.as_deref().map(time_arg).transpose()?,
                until: until.as_deref().map(time_arg).transpose()?,
                open: open.then_some(true),
                limit,
            };
            list(settings, &filter).await
        }
        QuarantineCommand::Show { id, max_bytes } => show(settings, id, max_bytes).await,
        QuarantineCommand::Replay { ids, by } => replay_ids(settings, &ids, &by).await,
    }
}

/// A `--since`/`--until` value: a date (midnight UTC) or an RFC 3339 time.
fn time_arg(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("{s:?} is neither YYYY-MM-DD nor RFC 3339"))?;
    Ok(day.and_time(chrono::NaiveTime::MIN).and_utc())
}

async fn list(settings: &Settings, filter: &Filter) -> Result<()> {
    let client = connect(settings).await?;
    let entries = quarantine::list(&client, filter).await?;
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                e.id,
                e.received_at.to_rfc3339(),
                e.station_id.as_deref().unwrap_or("-"),
                e.msg_id.as_deref().map_or("-".to_string(), escape_text),
                e.current_reason,
                e.status,
                escape_text(&e.detail)
            )
        })
        .collect();
    write_lines(&mut std::io::stdout().lock(), &lines)
}

async fn show(settings: &Settings, id: i64, max_bytes: usize) -> Result<()> {
    let client = connect(settings).await?;
    let Some(s) = quarantine::get(&client, id).await? else {
        bail!("no quarantine entry {id}");
    };
    let e = &s.entry;
    let mut lines = vec![
        format!("id:             {}", e.id),
        format!("received_at:    {}", e.received_at.to_rfc3339()),
        format!("topic:          {}", escape_text(&e.topic)),
        format!("station_id:     {}", e.station_id.as_deref().unwrap_or("-")),
        format!(
            "msg_id:         {}",
            e.msg_id.as_deref().map_or("-".to_string(), escape_text)
        ),
        format!("reason:         {}", e.reason),
        format!("detail:         {}", escape_text(&e.detail)),
        format!("status:         {} ({})", e.status, e.current_reason),
        format!("payload_sha256: {}", e.payload_sha256),
        format!("size:           {} bytes", e.size),
    ];
    for r in &s.replays {
        lines.push(format!(
            "replayed:       {} by {}: {}{}",
            r.replayed_at.to_rfc3339(),
            escape_text(&r.replayed_by),
            r.outcome,
            r.reason
                .as_deref()
                .map_or(String::new(), |c| format!(" ({c})"))
        ));
    }
    let shown = if max_bytes == 0 {
        &s.raw[..]
    } else {
        &s.raw[..s.raw.len().min(max_bytes)]
    };
    lines.push("payload:".to_string());
    lines.push(escape_bytes(shown));
    if shown.len() < s.raw.len() {
        lines.push(format!(
            "… {} more bytes (--max-bytes 0 shows all)",
            s.raw.len() - shown.len()
        ));
    }
    write_lines(&mut std::io::stdout().lock(), &lines)
}

async fn replay_ids(settings: &Settings, ids: &[i64], by: &str) -> Result<()> {
    let standards = settings.standards()?;
    let mut client = admin_connect(settings).await?;
    let results = replay::replay(&mut client, settings, &standards, ids, by).await?;
    let lines: Vec<String> = results
        .iter()
        .map(|r| match r.reason {
            Some(reason) => format!(
                "{}\t{}\t{reason}\t{}",
                r.id,
                r.outcome,
                escape_text(r.detail.as_deref().unwrap_or(""))
            ),
            None => format!("{}\t{}", r.id, r.outcome),
        })
        .collect();
    write_lines(&mut std::io::stdout().lock(), &lines)?;
    if results.iter().any(|r| r.outcome == "not_found") {
        bail!("some ids are not in the quarantine");
    }
    Ok(())
}

/// Text with control characters (and quotes, backslashes) escaped as Rust would write them;
/// other characters, Chinese included, as they are.
fn escape_text(s: &str) -> String {
    s.escape_debug().to_string()
}

/// A payload for the terminal: valid UTF-8 as [`escape_text`], anything else byte by byte
/// with non-ASCII bytes as `\xNN`.
fn escape_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => escape_text(s),
        Err(_) => b.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_printed_without_control_characters() {
        let hostile = "{\"a\":\"\u{1b}[2J\u{7}<script>\"}\n镉";
        let shown = escape_bytes(hostile.as_bytes());
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert!(shown.contains("镉") && shown.contains("<script>"));
        let bytes = escape_bytes(&[0xff, 0x1b, b'a']);
        assert_eq!(bytes, "\\xff\\x1ba");
    }

    #[test]
    fn time_arguments() {
        assert_eq!(
            time_arg("2026-11-28").ok().map(|t| t.to_rfc3339()),
            Some("2026-11-28T00:00:00+00:00".to_string())
        );
        assert!(time_arg("2026-11-28T08:00:00+08:00").is_ok());
        assert!(time_arg("yesterday").is_err());
    }
}
