//! The broker identities as RabbitMQ users (cluster mode), managed through the management
//! plugin's HTTP API: the same guarantees the Mosquitto ACL gives (module [`crate::broker`]).
//!
//! Why the HTTP API and not `rabbitmqctl`: soilmon runs on other machines than the brokers;
//! the API needs only an `administrator` user and a URL, where `rabbitmqctl` needs the Erlang
//! cookie, the CLI installed and the Erlang distribution port reachable.
//!
//! Every user soilmon manages carries the tag `soilmon-station` or `soilmon-bureau` (tags
//! other than RabbitMQ's own grant nothing); users without them (soilmon's service account,
//! the administrator) are never touched. [`sync`] reads the users, vhost permissions and
//! topic permissions once, writes only what differs from the database, and deletes every
//! tagged user that is not an active identity (RabbitMQ closes a deleted user's
//! connections, whatever the protocol).
//!
//! Rules, on the MQTT plugin's vhost and its exchange (`amqp.exchange`, `amq.topic`); topic
//! permissions match AMQP routing keys (MQTT `/` is `.`, `.` is `/`), and are checked on
//! publish and on subscribe (bind), so a refused subscription never receives anything:
//!
//! | identity | vhost permissions (configure / write / read) | topic write | topic read |
//! |---|---|---|---|
//! | station `ID` | its MQTT session queue / exchange + session queue / exchange + session queue | `^P\.stations\.ID\.readings$` | `^P\.stations\.ID\.rejects$` |
//! | bureau | session queue / session queue / exchange + session queue | nothing (`^$`) | `^P\.alerts\.(C1\|C2)\..+$` (`^P\.alerts\..+$` city-wide) |
//!
//! (`P` is the topic prefix as a routing key.) "Session queue" is `^mqtt-subscription-.*$`:
//! the plugin names a client's queue after its client id, which the identity chooses, so the
//! pattern cannot name one user's queues only; see docs/security.md for what that leaves open
//! to a client speaking AMQP 0-9-1 instead of MQTT, and why the AMQP listener must not be
//! reachable from stations and bureaus.
//!
//! The patterns are written out per user rather than with `{username}` expansion: a name may
//! contain `.`, which is `/` in the routing key and a wildcard in a regex.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::amqp::routing_key;
use crate::config::Settings;
use crate::store::identities::{Identity, IdentityKind};

/// Errors talking to the management API.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// No node of `broker.rabbitmq_api_urls` answered.
    #[error("rabbitmq api: no node of broker.rabbitmq_api_urls answered ({tried} tried); last error: {last}")]
    Unreachable {
        /// How many URLs were tried.
        tried: usize,
        /// The last node's error.
        last: String,
    },
    /// A request failed or was refused.
    #[error("rabbitmq api: {method} {path}: {detail}")]
    Request {
        /// HTTP method.
        method: &'static str,
        /// Path below the base URL.
        path: String,
        /// Status and body, or the transport error.
        detail: String,
    },
}

/// The hashing algorithm name RabbitMQ records with a user.
pub const HASHING: &str = "rabbit_password_hashing_sha256";
/// Tag of a station user managed by soilmon.
pub const STATION_TAG: &str = "soilmon-station";
/// Tag of a bureau user managed by soilmon.
pub const BUREAU_TAG: &str = "soilmon-bureau";
const TIMEOUT: Duration = Duration::from_secs(15);

/// Hashes `password` as RabbitMQ's `rabbit_password_hashing_sha256` does: base64 of a random
/// 4-byte salt followed by SHA-256(salt ‖ password).
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    hash_with(password, salt)
}

fn hash_with(password: &str, salt: [u8; 4]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&h.finalize());
    STANDARD.encode(out)
}

/// Escapes `s` for a PCRE pattern (the characters that are special outside a class).
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What one identity may do on RabbitMQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Vhost permission: configure (declare/delete) these queues and exchanges.
    pub configure: String,
    /// Vhost permission: write (publish to, bind a queue) these.
    pub write: String,
    /// Vhost permission: read (consume from, bind from) these.
    pub read: String,
    /// Topic permission on the exchange: publish with these routing keys.
    pub topic_write: String,
    /// Topic permission on the exchange: subscribe (bind) with these routing keys.
    pub topic_read: String,
}

/// The rules of `id` under topic prefix `prefix` on exchange `exchange`.
pub fn rules(id: &Identity, prefix: &str, exchange: &str) -> Rules {
    let p = esc(&routing_key(prefix));
    let session = "mqtt-subscription-.*";
    let x = esc(exchange);
    match id.kind {
        IdentityKind::Station => {
            let me = esc(&routing_key(&id.username));
            Rules {
                configure: format!("^{session}$"),
                write: format!("^({x}|{session})$"),
                read: format!("^({x}|{session})$"),
                topic_write: format!("^{p}\\.stations\\.{me}\\.readings$"),
                topic_read: format!("^{p}\\.stations\\.{me}\\.rejects$"),
            }
        }
        IdentityKind::Bureau => {
            let scope = if id.all_counties {
                String::new()
            } else {
                let cs: Vec<String> = id.counties.iter().map(|c| esc(c)).collect();
                format!("({})\\.", cs.join("|"))
            };
            Rules {
                configure: format!("^{session}$"),
                write: format!("^{session}$"),
                read: format!("^({x}|{session})$"),
                topic_write: "^$".into(),
                topic_read: format!("^{p}\\.alerts\\.{scope}.+$"),
            }
        }
    }
}

/// What [`sync`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RabbitReport {
    /// The API node used.
    pub node: String,
    /// Identities present on RabbitMQ after the sync.
    pub identities: usize,
    /// Users created or changed (password, tags or permissions).
    pub changed: Vec<String>,
    /// Users deleted (revoked or unknown identities).
    pub deleted: Vec<String>,
    /// Active identities without a RabbitMQ hash (created before schema 23): rotate them.
    pub need_rotation: Vec<String>,
}

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One API node and the client talking to it.
struct Api<'a> {
    http: reqwest::Client,
    base: String,
    user: &'a str,
    password: &'a str,
}

impl Api<'_> {
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, RabbitError> {
        let fail = |detail: String| RabbitError::Request {
            method,
            path: path.to_string(),
            detail,
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let mut req = self
            .http
            .request(m, format!("{}/api/{path}", self.base))
            .basic_auth(self.user, Some(self.password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {}", text.trim())));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("{status}: {e}")))
    }

    async fn list(&self, path: &str) -> Result<Vec<Value>, RabbitError> {
        match self.call("GET", path, None).await? {
            Value::Array(a) => Ok(a),
            other => Err(RabbitError::Request {
                method: "GET",
                path: path.into(),
                detail: format!("expected a list, got {other}"),
            }),
        }
    }
}

/// Connects to the first API node that lists the users; returns it with that list.
async fn first_node<'a>(settings: &'a Settings) -> Result<(Api<'a>, Vec<Value>), RabbitError> {
    let b = &settings.broker;
    let urls = b.rabbitmq_api_list();
    let mut builder = reqwest::Client::builder().timeout(TIMEOUT);
    // `https://` API URLs are verified against the cluster's CA (amqp.tls_ca_file) only,
    // when it is set; the system's roots otherwise.
    if let Some(tls) = &settings.amqp.tls {
        builder = builder.use_preconfigured_tls((**tls).clone());
    }
    let http = builder.build().map_err(|e| RabbitError::Unreachable {
        tried: 0,
        last: e.to_string(),
    })?;
    let mut last = String::from("broker.rabbitmq_api_urls is empty");
    for u in &urls {
        let api = Api {
            http: http.clone(),
            base: u.to_string(),
            user: &b.rabbitmq_admin_user,
            password: &b.rabbitmq_admin_password,
        };
        match api.list("users").await {
            Ok(users) => return Ok((api, users)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(RabbitError::Unreachable {
        tried: urls.len(),
        last,
    })
}

fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v[key].as_str().unwrap_or_default()
}

/// A user's tags: a list in newer versions, a comma-separated string in older ones.
fn tags(v: &Value) -> BTreeSet<String> {
    match &v["tags"] {
        Value::Array(a) => a
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// Makes RabbitMQ's users match the active identities `ids` (see the module docs).
pub async fn sync(settings: &Settings, ids: &[Identity]) -> Result<RabbitReport, RabbitError> {
    let (api, users) = first_node(settings).await?;
    let vhost = settings.broker.rabbitmq_vhost();
    let v = seg(vhost);
    let exchange = &settings.amqp.exchange;
    let perms: BTreeMap<String, Value> = api
        .list(&format!("vhosts/{v}/permissions"))
        .await?
        .into_iter()
        .map(|p| (text(&p, "user").to_string(), p))
        .collect();
    let topic: BTreeMap<String, Value> = api
        .list(&format!("vhosts/{v}/topic-permissions"))
        .await?
        .into_iter()
        .filter(|p| text(p, "exchange") == exchange)
        .map(|p| (text(&p, "user").to_string(), p))
        .collect();
    let existing: BTreeMap<String, &Value> = users
        .iter()
        .map(|u| (text(u, "name").to_string(), u))
        .collect();
    let mut report = RabbitReport {
        node: api.base.clone(),
        ..Default::default()
    };
    let mut wanted = BTreeSet::new();
    for id in ids.iter().filter(|i| i.revoked_at.is_none()) {
        let Some(hash) = &id.rabbitmq_password_hash else {
            report.need_rotation.push(id.username.clone());
            continue;
        };
        wanted.insert(id.username.clone());
        let r = rules(id, &settings.mqtt.topic_prefix, exchange);
        let current = Current {
            user: existing.get(&id.username).copied(),
            perms: perms.get(&id.username),
            topic: topic.get(&id.username),
        };
        if apply(&api, &v, exchange, id, hash, &r, &current).await? {
            report.changed.push(id.username.clone());
        }
    }
    report.identities = wanted.len();
    for (name, u) in &existing {
        let t = tags(u);
        let managed = t.contains(STATION_TAG) || t.contains(BUREAU_TAG);
        if managed && !wanted.contains(name) {
            api.call("DELETE", &format!("users/{}", seg(name)), None)
                .await?;
            report.deleted.push(name.clone());
        }
    }
    Ok(report)
}

/// What RabbitMQ holds for one user now.
struct Current<'v> {
    user: Option<&'v Value>,
    perms: Option<&'v Value>,
    topic: Option<&'v Value>,
}

/// Writes the user, its vhost permissions and its topic permissions where they differ from
/// what RabbitMQ holds; whether anything was written.
async fn apply(
    api: &Api<'_>,
    v: &str,
    exchange: &str,
    id: &Identity,
    hash: &str,
    r: &Rules,
    now: &Current<'_>,
) -> Result<bool, RabbitError> {
    let tag = match id.kind {
        IdentityKind::Station => STATION_TAG,
        IdentityKind::Bureau => BUREAU_TAG,
    };
    let name = seg(&id.username);
    let mut changed = false;
    let user_ok = now.user.is_some_and(|u| {
        text(u, "password_hash") == hash
            && text(u, "hashing_algorithm") == HASHING
            && tags(u) == BTreeSet::from([tag.to_string()])
    });
    if !user_ok {
        let body = json!({"password_hash": hash, "hashing_algorithm": HASHING, "tags": tag});
        api.call("PUT", &format!("users/{name}"), Some(body))
            .await?;
        changed = true;
    }
    let perms_ok = now.perms.is_some_and(|p| {
        text(p, "configure") == r.configure
            && text(p, "write") == r.write
            && text(p, "read") == r.read
    });
    if !perms_ok {
        let body = json!({"configure": r.configure, "write": r.write, "read": r.read});
        api.call("PUT", &format!("permissions/{v}/{name}"), Some(body))
            .await?;
        changed = true;
    }
    let topic_ok = now
        .topic
        .is_some_and(|p| text(p, "write") == r.topic_write && text(p, "read") == r.topic_read);
    if !topic_ok {
        let body = json!({"exchange": exchange, "write": r.topic_write, "read": r.topic_read});
        api.call("PUT", &format!("topic-permissions/{v}/{name}"), Some(body))
            .await?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, kind: IdentityKind, counties: &[&str], all: bool) -> Identity {
        Identity {
            username: name.into(),
            kind,
            password_hash: "h".into(),
            rabbitmq_password_hash: Some("r".into()),
            counties: counties.iter().map(|c| c.to_string()).collect(),
            all_counties: all,
            created_at: chrono::Utc::now(),
            revoked_at: None,
        }
    }

    /// Made by `rabbitmqctl add_user refhash s3cret` on RabbitMQ 3.10.8, read back from
    /// `GET /api/users/refhash`.
    const REFERENCE: &str = "FtNJ9+oFvxU3JxHJ0lxuuFwdIBISFEg1TI1SyA/pRY4NNv4R";

    #[test]
    fn reproduces_a_rabbitmqctl_hash_from_its_salt() {
        let raw = STANDARD.decode(REFERENCE).unwrap();
        let salt: [u8; 4] = raw[..4].try_into().unwrap();
        assert_eq!(hash_with("s3cret", salt), REFERENCE);
        assert_ne!(hash_with("s3cret!", salt), REFERENCE);
    }

    #[test]
    fn hashes_are_salted_sha256_in_rabbitmq_layout() {
        let h = hash("pw");
        let raw = STANDARD.decode(&h).unwrap();
        assert_eq!(raw.len(), 4 + 32);
        let salt: [u8; 4] = raw[..4].try_into().unwrap();
        assert_eq!(hash_with("pw", salt), h);
        assert_ne!(hash("pw"), h);
    }

    #[test]
    fn station_rules_name_only_its_own_topics() {
        let r = rules(
            &id("st.01", IdentityKind::Station, &[], false),
            "soil/v1",
            "amq.topic",
        );
        assert_eq!(r.topic_write, r"^soil\.v1\.stations\.st/01\.readings$");
        assert_eq!(r.topic_read, r"^soil\.v1\.stations\.st/01\.rejects$");
        assert_eq!(r.write, r"^(amq\.topic|mqtt-subscription-.*)$");
    }

    #[test]
    fn bureau_rules_name_its_counties() {
        let r = rules(
            &id(
                "yangchun",
                IdentityKind::Bureau,
                &["441781", "441702"],
                false,
            ),
            "soil/v1",
            "amq.topic",
        );
        assert_eq!(r.topic_read, r"^soil\.v1\.alerts\.(441781|441702)\..+$");
        assert_eq!(r.topic_write, "^$");
        assert_eq!(r.write, "^mqtt-subscription-.*$");
        let city = rules(
            &id("city", IdentityKind::Bureau, &[], true),
            "soil/v1",
            "amq.topic",
        );
        assert_eq!(city.topic_read, r"^soil\.v1\.alerts\..+$");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("/"), "%2F");
        assert_eq!(seg("st-01.a_b"), "st-01.a_b");
    }
}
