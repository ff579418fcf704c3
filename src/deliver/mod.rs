//! Alert delivery to where bureau staff read alerts: webhooks, DingTalk / WeCom group
//! robots and e-mail, from bureau-owned subscriptions, at least once, in order per incident
//! key within a subscription, one by one or in a daily digest.
//!
//! The pure parts: [`filter`] (which events a subscription gets), [`backoff`] (retry timing,
//! `Retry-After`, dead-lettering), [`ratelimit`] (robot limits and folding), [`render`]
//! (the Chinese message text), [`schedule`] (when digests and reminders are due). The
//! adapters: [`webhook`] and [`robot`] (the channels over HTTP), [`email`] (SMTP),
//! [`digest`] (one digest or reminder), [`secrets`] (the secrets file), and [`engine`]
//! (fan-out of outbox events into `deliveries` rows, claiming batches, recording their
//! outcomes; `batch` sends one claimed batch), which `soilmon run` starts next to the
//! MQTT publisher and which never touches the ingest path.

pub mod backoff;
mod batch;
pub mod digest;
pub mod email;
pub mod engine;
pub mod filter;
pub mod manage;
pub mod ratelimit;
pub mod render;
pub mod robot;
pub mod schedule;
pub mod secrets;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::subscriptions::Subscription;
use crate::store::StoreError;

/// Errors setting up a subscription's channel or running the engine.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The secrets file could not be used.
    #[error(transparent)]
    Secrets(#[from] secrets::SecretsError),
    /// A database error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The subscription's channel cannot be set up (bad URL, header, CA file…).
    #[error("{0}")]
    Channel(String),
}

/// How a subscription is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    /// JSON POST of the alert payload, HMAC-signed.
    Webhook,
    /// DingTalk group robot (markdown; signed mode with a secret).
    Dingtalk,
    /// WeCom group robot (markdown).
    Wecom,
    /// E-mail over SMTP (plain text).
    Email,
}

impl ChannelKind {
    /// Parses the database / command-line spelling.
    pub fn parse(s: &str) -> Option<ChannelKind> {
        match s {
            "webhook" => Some(ChannelKind::Webhook),
            "dingtalk" => Some(ChannelKind::Dingtalk),
            "wecom" => Some(ChannelKind::Wecom),
            "email" => Some(ChannelKind::Email),
            _ => None,
        }
    }

    /// The database spelling (also the `channel` label of the metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Dingtalk => "dingtalk",
            ChannelKind::Wecom => "wecom",
            ChannelKind::Email => "email",
        }
    }

    /// Robots fold pending alerts past their rate limit; webhooks and e-mail never do.
    pub fn is_robot(self) -> bool {
        matches!(self, ChannelKind::Dingtalk | ChannelKind::Wecom)
    }
}

/// Channel options stored with a subscription (`subscriptions.options`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Extra request headers (no credentials here: they are stored in the database).
    pub headers: BTreeMap<String, String>,
    /// Request timeout, ms (default `deliver.timeout_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// CA certificate (PEM) that the receiver's certificate must chain to; unset: the
    /// system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// E-mail: the sender address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// E-mail: the recipients.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// Digest: local time `HH:MM` (`deliver.digest_utc_offset_hours`) of the daily digest;
    /// unset: every event is sent at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_at: Option<String>,
    /// Reminder: incidents open longer than this many days are listed again every day at
    /// `digest_at` (or `deliver.reminder_at`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remind_days: Option<u32>,
    /// Deliveries in flight at once for this subscription, each on its own incident key
    /// (default `deliver.per_subscription`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it: HTTP status and (the start of) its answer.
    Delivered {
        /// HTTP status.
        status: u16,
        /// The answer's body, at most 500 bytes.
        answer: String,
    },
    /// Not delivered: retried later, or dead-lettered once the policy gives up.
    Failed {
        /// What went wrong (status and answer, timeout, connection error).
        error: String,
        /// The receiver's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// The first `n` bytes of `s`, on a character boundary.
fn clip(s: &str, n: usize) -> String {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Outcome {
    fn failed(error: String) -> Outcome {
        Outcome::Failed {
            error,
            retry_after: None,
        }
    }

    /// The outcome of an HTTP request: 2xx is delivered, anything else failed.
    async fn of_response(
        sent: Result<reqwest::Response, reqwest::Error>,
        timeout: Duration,
    ) -> Outcome {
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::failed(format!("timeout after {} ms", timeout.as_millis()))
            }
            Err(e) if e.is_connect() => {
                return Outcome::failed(format!("unreachable: {}", chain(&e)))
            }
            Err(e) => return Outcome::failed(format!("request failed: {}", chain(&e))),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| backoff::parse_retry_after(v, chrono::Utc::now()));
        let answer = match resp.text().await {
            Ok(t) => clip(&t, 500),
            Err(e) if e.is_timeout() => {
                return Outcome::failed(format!("timeout after {} ms", timeout.as_millis()))
            }
            Err(e) => return Outcome::failed(format!("reading the answer: {}", chain(&e))),
        };
        if status.is_success() {
            Outcome::Delivered {
                status: status.as_u16(),
                answer,
            }
        } else {
            Outcome::Failed {
                error: format!("HTTP {}: {}", status.as_u16(), clip(&answer, 200)),
                retry_after,
            }
        }
    }
}

/// An error with its sources (reqwest's own text hides the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A subscription ready to send: its HTTP client (timeout, CA) or mailer, URL, headers,
/// secret and options.
#[derive(Debug, Clone)]
pub struct Target {
    /// Subscription id.
    pub id: i64,
    /// Subscription name.
    pub name: String,
    /// Channel.
    pub channel: ChannelKind,
    /// Channel options (digest, reminders, concurrency…).
    pub options: Options,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: Vec<(String, String)>,
    secret: Option<String>,
    timeout: Duration,
    mailer: Option<email::Mailer>,
}

/// A URL with its query (a robot's token) replaced by `…`, for the database and listings.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

impl Target {
    /// Builds the channel of `sub` with its `secrets` (from the secrets file).
    pub fn build(
        sub: &Subscription,
        secrets: Option<&secrets::Secrets>,
        default_timeout: Duration,
    ) -> Result<Target, DeliverError> {
        let bad =
            |what: String| DeliverError::Channel(format!("subscription {}: {what}", sub.name));
        let channel = ChannelKind::parse(&sub.channel)
            .ok_or_else(|| bad(format!("unknown channel {:?}", sub.channel)))?;
        let options: Options = serde_json::from_value(sub.options.clone())
            .map_err(|e| bad(format!("options: {e}")))?;
        let secret = secrets.and_then(|s| s.secret.clone());
        let timeout = options
            .timeout_ms
            .map_or(default_timeout, Duration::from_millis);
        let url_text = match channel {
            ChannelKind::Webhook | ChannelKind::Email => Some(sub.target.clone()),
            _ => secrets.and_then(|s| s.url.clone()),
        }
        .ok_or_else(|| bad("no robot URL in deliver.secrets_file".into()))?;
        let (url, mailer) = if channel == ChannelKind::Email {
            let url = reqwest::Url::parse(&url_text).map_err(|e| bad(format!("URL: {e}")))?;
            (
                url,
                Some(mailer(&url_text, &options, secret.as_deref(), timeout).map_err(bad)?),
            )
        } else {
            (check_url(&url_text).map_err(bad)?, None)
        };
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("soilmon/", env!("CARGO_PKG_VERSION")));
        if let (Some(ca), None) = (&options.ca_file, &mailer) {
            let tls = crate::config::tls_client_config(ca).map_err(bad)?;
            builder = builder.use_preconfigured_tls((*tls).clone());
        }
        let client = builder
            .build()
            .map_err(|e| bad(format!("HTTP client: {e}")))?;
        for (k, v) in &options.headers {
            check_header(k, v).map_err(bad)?;
        }
        Ok(Target {
            id: sub.id,
            name: sub.name.clone(),
            channel,
            headers: options.headers.clone().into_iter().collect(),
            options,
            client,
            url,
            secret,
            timeout,
            mailer,
        })
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `events` (one, or several folded into a robot summary) as attempt `attempt`.
    pub async fn send(
        &self,
        events: &[render::Event<'_>],
        ctx: &render::Context,
        attempt: i32,
    ) -> Outcome {
        let Some(first) = events.first() else {
            return Outcome::failed("nothing to send".into());
        };
        let message = || {
            if events.len() == 1 {
                ctx.alert(first)
            } else {
                ctx.summary(events, 20)
            }
        };
        match self.channel {
            ChannelKind::Webhook => webhook::send(self, first.payload, attempt).await,
            ChannelKind::Dingtalk => robot::send_dingtalk(self, &message()).await,
            ChannelKind::Wecom => robot::send_wecom(self, &message()).await,
            ChannelKind::Email => {
                let id = first
                    .payload
                    .get("event_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                self.send_message(&message(), id, None, attempt).await
            }
        }
    }

    /// Sends a rendered message (a digest or a reminder) identified by `id`; a webhook gets
    /// `json` as its body.
    pub async fn send_message(
        &self,
        m: &render::Message,
        id: &str,
        json: Option<&serde_json::Value>,
        attempt: i32,
    ) -> Outcome {
        match (self.channel, &self.mailer) {
            (ChannelKind::Email, Some(mailer)) => mailer.send(m, id, attempt).await,
            (ChannelKind::Email, None) => Outcome::failed("no mailer".into()),
            (ChannelKind::Webhook, _) => {
                let body = json.cloned().unwrap_or_else(
                    || serde_json::json!({"event_id": id, "title": m.title, "text": m.text}),
                );
                webhook::send(self, &body, attempt).await
            }
            (ChannelKind::Dingtalk, _) => robot::send_dingtalk(self, m).await,
            (ChannelKind::Wecom, _) => robot::send_wecom(self, m).await,
        }
    }
}

/// The mailer of an e-mail subscription.
fn mailer(
    url: &str,
    options: &Options,
    password: Option<&str>,
    timeout: Duration,
) -> Result<email::Mailer, String> {
    let from = options
        .from
        .as_deref()
        .ok_or("an e-mail subscription needs --from")?;
    let ca = match &options.ca_file {
        Some(f) => Some(std::fs::read(f).map_err(|e| format!("CA file {}: {e}", f.display()))?),
        None => None,
    };
    email::Mailer::build(url, from, &options.to, password, timeout, ca.as_deref())
}

/// Checks a channel URL: http or https with a host.
pub fn check_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("URL {text:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("URL {:?}: must be http(s)://host/…", redact(text)));
    }
    Ok(url)
}

/// Checks one configured header name and value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("header name {name:?} is not valid"))?;
    reqwest::header::HeaderValue::from_str(value)
        .map_err(|_| format!("header {name}: value is not valid"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_headers() {
        assert!(check_url("https://hooks.example/x").is_ok());
        assert!(check_url("ftp://hooks.example/x").is_err());
        assert!(check_url("not a url").is_err());
        assert_eq!(
            redact("https://oapi.dingtalk.com/robot/send?access_token=abc"),
            "https://oapi.dingtalk.com/robot/send?…"
        );
        assert!(check_header("X-Bureau", "yangchun").is_ok());
        assert!(check_header("Bad Header", "v").is_err());
        assert!(check_header("X-A", "line\nbreak").is_err());
    }

    #[test]
    fn clip_keeps_characters_whole() {
        assert_eq!(clip("镉镉", 4), "镉");
        assert_eq!(clip("ab", 10), "ab");
    }
}
