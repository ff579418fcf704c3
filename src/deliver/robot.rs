//! The `dingtalk` and `wecom` channels: group-robot webhooks with their markdown messages.
//!
//! * DingTalk (钉钉) custom robot: `POST {"msgtype":"markdown","markdown":{"title","text"}}`
//!   to the robot URL (`…/robot/send?access_token=…`). In signed mode (加签) the URL also
//!   carries `timestamp` (Unix ms) and `sign` = urlencode(base64(HMAC-SHA256(key = secret,
//!   timestamp + "\n" + secret))).
//! * WeCom (企业微信) group robot: `POST {"msgtype":"markdown","markdown":{"content"}}` to
//!   `…/webhook/send?key=…`.
//!
//! Both answer HTTP 200 with `{"errcode":0,"errmsg":"ok"}` when the message was taken; any
//! other `errcode` is a failure (rate-limit codes are retried after a minute). Both allow 20
//! messages a minute per robot: the engine folds what is pending past that
//! ([`super::ratelimit`]).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::render::Message;
use super::{Outcome, Target};

/// DingTalk's "send too fast" error code.
const DINGTALK_TOO_FAST: i64 = 130101;
/// WeCom's "api freq out of limit" error code.
const WECOM_TOO_FAST: i64 = 45009;

/// DingTalk's signature of `timestamp_ms` (not yet urlencoded: the URL encoder does it).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The DingTalk markdown message.
pub fn dingtalk_body(m: &Message) -> Value {
    json!({"msgtype": "markdown", "markdown": {"title": m.title, "text": m.text}})
}

/// The WeCom markdown message (its markdown has no title: it leads the content).
pub fn wecom_body(m: &Message) -> Value {
    json!({"msgtype": "markdown", "markdown": {"content": m.text}})
}

/// Sends a rendered message to a DingTalk robot (signed when the subscription has a secret).
pub async fn send_dingtalk(t: &Target, m: &Message) -> Outcome {
    let mut url = t.url.clone();
    if let Some(secret) = t.secret.as_deref().filter(|s| !s.is_empty()) {
        let ts = chrono::Utc::now().timestamp_millis();
        url.query_pairs_mut()
            .append_pair("timestamp", &ts.to_string())
            .append_pair("sign", &dingtalk_sign(secret, ts));
    }
    post(t, url, &dingtalk_body(m), DINGTALK_TOO_FAST).await
}

/// Sends a rendered message to a WeCom robot.
pub async fn send_wecom(t: &Target, m: &Message) -> Outcome {
    post(t, t.url.clone(), &wecom_body(m), WECOM_TOO_FAST).await
}

async fn post(t: &Target, url: reqwest::Url, body: &Value, too_fast: i64) -> Outcome {
    let mut req = t.client.post(url).json(body);
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    match Outcome::of_response(req.send().await, t.timeout).await {
        Outcome::Delivered { status, answer } => robot_answer(status, answer, too_fast),
        failed => failed,
    }
}

/// A 2xx answer of a robot is a delivery only with `errcode` 0.
fn robot_answer(status: u16, answer: String, too_fast: i64) -> Outcome {
    let code = serde_json::from_str::<Value>(&answer)
        .ok()
        .and_then(|v| v.get("errcode").and_then(Value::as_i64));
    match code {
        Some(0) => Outcome::Delivered { status, answer },
        Some(c) => Outcome::Failed {
            error: format!("robot errcode {c}: {answer}"),
            retry_after: (c == too_fast).then_some(Duration::from_secs(60)),
        },
        None => Outcome::failed(format!("robot answer without errcode: {answer}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed independently (Python's hmac/base64) for the docs' example.
    #[test]
    fn dingtalk_signature_example() {
        assert_eq!(
            dingtalk_sign("SECexample", 1764300000000),
            "/5mK1qbC0GG3U1IjmrjVMBqPNK/HLO45mDoCj7ghW6k="
        );
    }

    #[test]
    fn message_shapes() {
        let m = Message {
            title: "t".into(),
            text: "### t\n- x".into(),
        };
        assert_eq!(
            dingtalk_body(&m),
            json!({"msgtype": "markdown", "markdown": {"title": "t", "text": "### t\n- x"}})
        );
        assert_eq!(
            wecom_body(&m),
            json!({"msgtype": "markdown", "markdown": {"content": "### t\n- x"}})
        );
    }

    #[test]
    fn errcode_decides() {
        let ok = robot_answer(
            200,
            r#"{"errcode":0,"errmsg":"ok"}"#.into(),
            DINGTALK_TOO_FAST,
        );
        assert!(matches!(ok, Outcome::Delivered { .. }));
        let fast = robot_answer(200, r#"{"errcode":130101}"#.into(), DINGTALK_TOO_FAST);
        assert!(matches!(
            fast,
            Outcome::Failed { retry_after: Some(d), .. } if d == Duration::from_secs(60)
        ));
        let other = robot_answer(200, r#"{"errcode":310000}"#.into(), DINGTALK_TOO_FAST);
        assert!(matches!(
            other,
            Outcome::Failed {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            robot_answer(200, "hi".into(), 1),
            Outcome::Failed { .. }
        ));
    }
}
