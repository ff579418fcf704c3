//! Managing subscriptions: the one place where a new subscription is checked and stored, a
//! test message is sent, a subscription is paused, resumed or removed and dead letters are
//! listed and retried. `soilmon subscriptions|deliveries` (`src/cli/subscriptions.rs`), the
//! admin API (`/v1/subscriptions…`, `/v1/deliveries…`) and the console page
//! (`/console/subscriptions`) all call these functions, so the three apply the same rules.
//!
//! **Who.** An [`Actor`] says on whose behalf: the command line and an `admin` token manage
//! every subscription ([`Actor::ADMIN`]); a `bureau` token manages only the subscriptions of
//! the bureau broker identity of its own name, and only for counties of its own token
//! ([`Actor::bureau`]). Another bureau's subscription is the same "no subscription" as a
//! missing one.
//!
//! **Secrets** (a webhook's HMAC key, a robot's URL with its token, DingTalk's signing
//! secret, an SMTP password) go to `deliver.secrets_file` and never to the database; a
//! generated webhook key is handed back once by [`add`] and never again.

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::filter::{FilterError, Filters, LandClass, Scope};
use super::secrets::{self, Secrets, SecretsError};
use super::{email, engine, render, schedule, ChannelKind, DeliverError, Options, Outcome, Target};
use crate::config::DeliverConfig;
use crate::store::deliveries::{self, DeliveryRow};
use crate::store::subscriptions::{self, NewSubscription, Overview};
use crate::store::StoreError;

/// Why a management request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// A bad request: a bad URL, address, time, header…, a name in use, an unknown bureau.
    #[error("{0}")]
    Invalid(String),
    /// A filter value no event carries, or a county outside the bureau's scope.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// A county outside the counties of the bureau user's own token.
    #[error("county {county:?} is outside your counties ({yours})")]
    OutsideYours {
        /// The refused county.
        county: String,
        /// The caller's counties.
        yours: String,
    },
    /// No such live subscription (or not one the caller may manage).
    #[error("no subscription {0:?}")]
    NotFound(String),
    /// The secrets file could not be used (or `deliver.secrets_file` is not set).
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The subscription's channel cannot be set up.
    #[error(transparent)]
    Channel(#[from] DeliverError),
    /// A database error.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(m) => ManageError::Invalid(m),
            other => ManageError::Store(other),
        }
    }
}

impl ManageError {
    /// Whether the request itself was at fault (the API's 400/404), not the server.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ManageError::Invalid(_)
                | ManageError::Filter(_)
                | ManageError::OutsideYours { .. }
                | ManageError::NotFound(_)
        )
    }
}

/// On whose behalf a request is made.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// `Some(name)`: a bureau user, who manages only the subscriptions of the bureau
    /// identity `name`; `None`: every subscription (CLI, admin).
    pub bureau: Option<&'a str>,
    /// The counties the caller may read; a subscription's counties must lie within them.
    pub counties: &'a Scope,
}

/// The scope of an administrator.
const ALL: Scope = Scope::All;

impl Actor<'static> {
    /// The command line or an `admin` token: every subscription, every county.
    pub const ADMIN: Actor<'static> = Actor {
        bureau: None,
        counties: &ALL,
    };
}

impl<'a> Actor<'a> {
    /// A `bureau` token named `name` reading `counties`.
    pub fn bureau(name: &'a str, counties: &'a Scope) -> Actor<'a> {
        Actor {
            bureau: Some(name),
            counties,
        }
    }

    /// Whether the caller manages subscriptions of the bureau identity `bureau`.
    pub fn owns(&self, bureau: &str) -> bool {
        self.bureau.map_or(true, |b| b == bureau)
    }
}

/// A subscription to create, as the command line, the API (JSON) and the console form give
/// it. Empty lists and `None` take the defaults (see `docs/deliveries.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewRequest {
    /// Subscription name (letters, digits, `_.-`).
    pub name: String,
    /// Owning bureau broker identity; its counties bound the filters.
    pub bureau: String,
    /// `webhook`, `dingtalk`, `wecom` or `email`.
    pub channel: String,
    /// Receiver URL (a robot's with its token), or the SMTP server for e-mail.
    pub url: String,
    /// E-mail: recipients.
    pub to: Vec<String>,
    /// E-mail: sender.
    pub from: Option<String>,
    /// Daily digest at this local time (`HH:MM`).
    pub digest_at: Option<String>,
    /// Remind of incidents open longer than this many days.
    pub remind_days: Option<u32>,
    /// Deliveries in flight at once.
    pub concurrency: Option<usize>,
    /// County codes within the bureau's scope; empty: all of the bureau's.
    pub counties: Vec<String>,
    /// Metals; empty: all.
    pub metals: Vec<String>,
    /// Levels; empty: both.
    pub levels: Vec<String>,
    /// States; empty: the five exceedance states.
    pub states: Vec<String>,
    /// Sources; empty: both.
    pub sources: Vec<String>,
    /// `farmland` or `development`; `None`: both.
    pub land_use: Option<String>,
    /// Extra request headers, `Name: value`.
    pub headers: Vec<String>,
    /// Request timeout, ms.
    pub timeout_ms: Option<u64>,
    /// CA certificate (PEM) on the service's host that the receiver must chain to.
    pub ca_file: Option<PathBuf>,
    /// The webhook's HMAC key (generated when absent), DingTalk's signing secret or the
    /// SMTP password.
    pub secret: Option<String>,
}

/// A subscription created.
#[derive(Debug, Clone, Serialize)]
pub struct Added {
    /// Its name.
    pub name: String,
    /// Its channel.
    pub channel: &'static str,
    /// Its target as stored (a robot's token redacted).
    pub target: String,
    /// Its owning bureau.
    pub bureau: String,
    /// Its filters as stored.
    pub filters: Value,
    /// A generated webhook key: shown once, kept only in the secrets file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// The filters of a request, checked against the bureau's `scope`.
fn filters(req: &NewRequest, scope: &Scope) -> Result<Filters, ManageError> {
    let land_class = match req.land_use.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(l) => Some(LandClass::parse(l).ok_or_else(|| {
            ManageError::Invalid(format!("land use {l:?}: farmland or development"))
        })?),
    };
    let f = Filters {
        counties: req.counties.clone(),
        metals: req.metals.clone(),
        levels: req.levels.clone(),
        states: req.states.clone(),
        sources: req.sources.clone(),
        land_class,
    };
    Ok(f.check(scope)?)
}

/// The counties a subscription with `filters` of a bureau of `scope` would receive must lie
/// within the caller's own counties.
fn within_caller(actor: &Actor<'_>, filters: &Filters, scope: &Scope) -> Result<(), ManageError> {
    let Scope::Counties(yours) = actor.counties else {
        return Ok(());
    };
    let refused = |county: &str| ManageError::OutsideYours {
        county: county.to_string(),
        yours: yours.join(", "),
    };
    let wanted: &[String] = match (filters.counties.is_empty(), scope) {
        (false, _) => &filters.counties,
        (true, Scope::Counties(c)) => c,
        (true, Scope::All) => return Err(refused("*")),
    };
    match wanted.iter().find(|c| !actor.counties.covers(c)) {
        Some(c) => Err(refused(c)),
        None => Ok(()),
    }
}

/// The channel options of a request, checked.
fn options(
    d: &DeliverConfig,
    req: &NewRequest,
    channel: ChannelKind,
) -> Result<Options, ManageError> {
    let bad = |m: String| ManageError::Invalid(m);
    let mut o = Options::default();
    for h in &req.headers {
        let Some((k, v)) = h.split_once(':') else {
            return Err(bad(format!("header {h:?}: expected `Name: value`")));
        };
        let (k, v) = (k.trim(), v.trim());
        super::check_header(k, v).map_err(bad)?;
        o.headers.insert(k.to_string(), v.to_string());
    }
    if let Some(t) = req.timeout_ms {
        if t == 0 || t >= d.lease_secs.saturating_mul(1000) {
            return Err(bad(format!(
                "timeout {t} ms: must be positive and below deliver.lease_secs ({} s)",
                d.lease_secs
            )));
        }
        o.timeout_ms = Some(t);
    }
    if let Some(ca) = &req.ca_file {
        let ca =
            std::fs::canonicalize(ca).map_err(|e| bad(format!("CA file {}: {e}", ca.display())))?;
        crate::config::tls_client_config(&ca).map_err(bad)?;
        o.ca_file = Some(ca);
    }
    if let Some(at) = req
        .digest_at
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        schedule::parse_local_time(at).map_err(bad)?;
        o.digest_at = Some(at.to_string());
    }
    if req.remind_days == Some(0) {
        return Err(bad("remind days: at least 1".into()));
    }
    o.remind_days = req.remind_days;
    if req.concurrency == Some(0) {
        return Err(bad("concurrency: at least 1".into()));
    }
    o.concurrency = req.concurrency;
    let from = req.from.as_deref().map(str::trim).filter(|f| !f.is_empty());
    if channel == ChannelKind::Email {
        let from =
            from.ok_or_else(|| bad("an e-mail subscription needs --from (the sender)".into()))?;
        email::mailbox(from).map_err(bad)?;
        if req.to.is_empty() {
            return Err(bad(
                "an e-mail subscription needs at least one --to (recipient) address".into(),
            ));
        }
        for t in &req.to {
            email::mailbox(t).map_err(bad)?;
        }
        o.from = Some(from.to_string());
        o.to = req.to.clone();
    } else if from.is_some() || !req.to.is_empty() {
        return Err(bad(
            "--from and --to (sender, recipients) are for e-mail".into()
        ));
    }
    Ok(o)
}

/// Checks `req` and creates the subscription: its secrets in `deliver.secrets_file`, its row
/// in the database. A webhook without a given key gets a generated one, handed back once.
pub async fn add(
    d: &DeliverConfig,
    client: &Client,
    actor: &Actor<'_>,
    req: &NewRequest,
) -> Result<Added, ManageError> {
    let path = &d.secrets_file;
    if path.as_os_str().is_empty() {
        return Err(SecretsError::NotConfigured.into());
    }
    check_name(&req.name)?;
    if !actor.owns(&req.bureau) {
        return Err(ManageError::Invalid(format!(
            "a bureau user adds subscriptions of its own bureau only ({:?}), not {:?}",
            actor.bureau.unwrap_or_default(),
            req.bureau
        )));
    }
    let channel = ChannelKind::parse(&req.channel).ok_or_else(|| {
        ManageError::Invalid(format!(
            "channel {:?}: webhook, dingtalk, wecom or email",
            req.channel
        ))
    })?;
    let url = req.url.trim();
    if channel == ChannelKind::Email {
        email::parse_server(url).map_err(ManageError::Invalid)?;
    } else {
        super::check_url(url).map_err(ManageError::Invalid)?;
    }
    let (counties, all) = subscriptions::bureau_scope(client, &req.bureau).await?;
    let scope = if all {
        Scope::All
    } else {
        Scope::Counties(counties)
    };
    let filters = filters(req, &scope)?;
    within_caller(actor, &filters, &scope)?;
    let options = options(d, req, channel)?;
    let given = req
        .secret
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let generated = (channel == ChannelKind::Webhook && given.is_none()).then(secrets::new_secret);
    let (target, sec) = match channel {
        ChannelKind::Email => (
            url.to_string(),
            Secrets {
                secret: given,
                url: None,
            },
        ),
        ChannelKind::Webhook => (
            url.to_string(),
            Secrets {
                secret: given.or(generated.clone()),
                url: None,
            },
        ),
        _ => (
            super::redact(url),
            Secrets {
                secret: given,
                url: Some(url.to_string()),
            },
        ),
    };
    let filters_json = json_of(&filters)?;
    let options_json = json_of(&options)?;
    let new = NewSubscription {
        name: &req.name,
        bureau: &req.bureau,
        channel: channel.as_str(),
        target: &target,
        options: &options_json,
        filters: &filters_json,
    };
    if subscriptions::get(client, &req.name).await.is_ok() {
        return Err(ManageError::Invalid(format!(
            "subscription {:?} already exists",
            req.name
        )));
    }
    secrets::store(path, &req.name, Some(&sec))?;
    if let Err(e) = subscriptions::add(client, &new).await {
        secrets::store(path, &req.name, None)?;
        return Err(e.into());
    }
    Ok(Added {
        name: req.name.clone(),
        channel: channel.as_str(),
        target,
        bureau: req.bureau.clone(),
        filters: filters_json,
        secret: generated,
    })
}

fn json_of<T: Serialize>(v: &T) -> Result<Value, ManageError> {
    serde_json::to_value(v).map_err(|e| ManageError::Invalid(e.to_string()))
}

/// A subscription name: 1–64 letters, digits, `_`, `.`, `-` (it is a key of the secrets file,
/// one `NAME JSON` per line).
pub fn check_name(name: &str) -> Result<(), ManageError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ManageError::Invalid(format!(
            "subscription name {name:?}: 1 to 64 letters, digits, `_`, `.` or `-`"
        )))
    }
}

/// Every live subscription the actor manages, with its queue (depth, oldest pending, dead
/// letters, last error), by name.
pub async fn list(client: &Client, actor: &Actor<'_>) -> Result<Vec<Overview>, ManageError> {
    Ok(subscriptions::overview(client)
        .await?
        .into_iter()
        .filter(|o| actor.owns(&o.sub.bureau))
        .collect())
}

/// The live subscription `name`, if the actor manages it (else the same `NotFound` as for a
/// missing one).
async fn owned(
    client: &Client,
    actor: &Actor<'_>,
    name: &str,
) -> Result<subscriptions::Subscription, ManageError> {
    match subscriptions::get(client, name).await {
        Ok(s) if actor.owns(&s.bureau) => Ok(s),
        Ok(_) | Err(StoreError::Refused(_)) => Err(ManageError::NotFound(name.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Pauses (`true`) or resumes a subscription: while paused its deliveries queue up.
pub async fn set_paused(
    client: &Client,
    actor: &Actor<'_>,
    name: &str,
    paused: bool,
) -> Result<(), ManageError> {
    owned(client, actor, name).await?;
    subscriptions::set_paused(client, name, paused).await?;
    Ok(())
}

/// Removes a subscription: its undelivered deliveries are cancelled and its secrets deleted.
/// Returns how many deliveries were cancelled.
pub async fn remove(
    d: &DeliverConfig,
    client: &mut Client,
    actor: &Actor<'_>,
    name: &str,
) -> Result<u64, ManageError> {
    owned(client, actor, name).await?;
    let cancelled = subscriptions::remove(client, name).await?;
    if !d.secrets_file.as_os_str().is_empty() {
        secrets::store(&d.secrets_file, name, None)?;
    }
    Ok(cancelled)
}

/// What a test message came to: the receiver's answer, or why it was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tested {
    /// The receiver took it.
    pub delivered: bool,
    /// `HTTP 200 {…}` / `SMTP 250 …`, or the error (`HTTP 500: …`, `unreachable: …`).
    pub answer: String,
}

/// A test event in the alert payload's shape, marked `"test": true`.
pub fn test_payload(name: &str) -> Value {
    json!({
        "event_id": uuid::Uuid::now_v7(), "incident_id": null, "state": "test",
        "level": "screening", "point_id": "TEST", "county_code": "", "metal": "Cd",
        "value_mgkg": 0.0, "screening_mgkg": null, "intervention_mgkg": null,
        "standard": null, "land_use": "paddy", "sampled_at": chrono::Utc::now(),
        "source": "station", "station_id": "test", "test": true, "subscription": name,
    })
}

/// Sends a test message through the subscription's real channel (with its secrets) and
/// reports the receiver's answer. Nothing is queued or recorded.
pub async fn test(
    d: &DeliverConfig,
    client: &Client,
    actor: &Actor<'_>,
    name: &str,
) -> Result<Tested, ManageError> {
    let sub = owned(client, actor, name).await?;
    let all = secrets::load(&d.secrets_file)?;
    let target = Target::build(&sub, all.get(name), Duration::from_millis(d.timeout_ms))?;
    let payload = test_payload(name);
    let ctx = engine::render_context(d);
    let event = render::Event {
        payload: &payload,
        point_name: Some("测试点位"),
    };
    Ok(match target.send(&[event], &ctx, 1).await {
        Outcome::Delivered { status, answer } => {
            let proto = if target.channel == ChannelKind::Email {
                "SMTP"
            } else {
                "HTTP"
            };
            Tested {
                delivered: true,
                answer: format!("{proto} {status} {answer}"),
            }
        }
        Outcome::Failed { error, .. } => Tested {
            delivered: false,
            answer: error,
        },
    })
}

/// The newest deliveries of the subscriptions the actor manages (only dead-lettered ones
/// with `failed`; of one subscription with `subscription`), at most `limit`.
pub async fn deliveries(
    client: &Client,
    actor: &Actor<'_>,
    failed: bool,
    subscription: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, ManageError> {
    Ok(deliveries::list(client, failed, subscription, actor.bureau, limit).await?)
}

/// Puts dead letters of the subscriptions the actor manages back in the queue: the given
/// ids, or every dead one of `subscription`, or (neither) every dead one. Returns how many.
pub async fn retry(
    client: &Client,
    actor: &Actor<'_>,
    ids: &[i64],
    subscription: Option<&str>,
) -> Result<u64, ManageError> {
    Ok(deliveries::retry(client, ids, subscription, actor.bureau).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counties(c: &[&str]) -> Scope {
        Scope::Counties(c.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn a_bureau_user_stays_within_its_own_counties() {
        let yc = counties(&["441781"]);
        let me = Actor::bureau("yc", &yc);
        assert!(me.owns("yc") && !me.owns("other"));
        assert!(Actor::ADMIN.owns("anyone"));
        let f = |c: &[&str]| Filters {
            counties: c.iter().map(|s| s.to_string()).collect(),
            ..Filters::default()
        };
        // Named counties, or the bureau's own when none are named.
        assert!(within_caller(&me, &f(&["441781"]), &Scope::All).is_ok());
        assert!(within_caller(&me, &f(&[]), &yc).is_ok());
        let two = counties(&["441781", "441702"]);
        assert!(matches!(
            within_caller(&me, &f(&[]), &two),
            Err(ManageError::OutsideYours { county, .. }) if county == "441702"
        ));
        assert!(within_caller(&me, &f(&[]), &Scope::All).is_err());
        assert!(within_caller(&Actor::ADMIN, &f(&[]), &Scope::All).is_ok());
    }

    #[test]
    fn options_are_checked_once_for_every_caller() {
        let d = DeliverConfig::default();
        let req = |f: fn(&mut NewRequest)| {
            let mut r = NewRequest {
                channel: "webhook".into(),
                ..NewRequest::default()
            };
            f(&mut r);
            options(
                &d,
                &r,
                ChannelKind::parse(&r.channel).unwrap_or(ChannelKind::Webhook),
            )
        };
        assert!(req(|_| {}).is_ok());
        assert!(req(|r| r.digest_at = Some("25:00".into())).is_err());
        assert_eq!(
            req(|r| r.digest_at = Some("08:30".into()))
                .map(|o| o.digest_at)
                .ok()
                .flatten()
                .as_deref(),
            Some("08:30")
        );
        assert!(req(|r| r.to = vec!["a@example.org".into()]).is_err());
        assert!(req(|r| r.headers = vec!["no colon".into()]).is_err());
        assert!(req(|r| r.remind_days = Some(0)).is_err());
        assert!(req(|r| r.channel = "email".into()).is_err());
    }

    #[test]
    fn names_are_file_keys() {
        assert!(check_name("yc-hook_1.a").is_ok());
        for bad in ["", "a b", "a\nb", "阳春", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
