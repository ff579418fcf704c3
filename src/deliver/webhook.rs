//! The `webhook` channel: the alert payload (the wire contract's JSON, byte for byte what
//! the MQTT topic carries) in a POST, signed so the receiver can check that soilmon sent it
//! and reject replays.
//!
//! Headers on every request:
//!
//! | header | value |
//! |---|---|
//! | `X-Soilmon-Event-Id` | the event's stable `event_id` (receivers deduplicate on it) |
//! | `X-Soilmon-Timestamp` | Unix seconds when this attempt was signed |
//! | `X-Soilmon-Signature` | `sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body) |
//! | `X-Soilmon-Attempt` | 1 for the first attempt, 2 for the first retry, … |
//!
//! plus the subscription's own `headers`. A 2xx answer is a delivery; anything else, a
//! timeout or a refused connection is retried (with the answer's `Retry-After`, if any).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Outcome, Target};

/// The signature header value for `body` signed at `timestamp` (Unix seconds) with `secret`:
/// `sha256=` and the hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// POSTs one event's payload to the subscription's URL.
pub async fn send(t: &Target, payload: &serde_json::Value, attempt: i32) -> Outcome {
    match serde_json::to_vec(payload) {
        Ok(body) => post(t, payload, &body, attempt).await,
        Err(e) => Outcome::failed(format!("payload: {e}")),
    }
}

/// POSTs `body`, the JSON of `payload` (serialised once per event and shared by its
/// deliveries), to the subscription's URL.
pub async fn post(t: &Target, payload: &serde_json::Value, body: &[u8], attempt: i32) -> Outcome {
    let ts = chrono::Utc::now().timestamp();
    let secret = t.secret.as_deref().unwrap_or_default();
    let event_id = payload
        .get("event_id")
        .and_then(|v| v.as_str())
        .unwrap_or_default();
    let mut req = t
        .client
        .post(t.url.clone())
        .header("Content-Type", "application/json")
        .header("X-Soilmon-Event-Id", event_id)
        .header("X-Soilmon-Timestamp", ts.to_string())
        .header(
            "X-Soilmon-Signature",
            signature(secret.as_bytes(), ts, body),
        )
        .header("X-Soilmon-Attempt", attempt.to_string());
    for (k, v) in &t.headers {
        req = req.header(k, v);
    }
    Outcome::of_response(req.body(body.to_vec()).send().await, t.timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the README (docs/deliveries.md): secret, timestamp and body
    /// as written there give exactly this signature.
    #[test]
    fn worked_example() {
        let body = br#"{"event_id":"0192f0c1-0000-7000-8000-000000000001","state":"opened"}"#;
        assert_eq!(
            signature(b"s3cr3t", 1764300000, body),
            "sha256=c259bfc5c79a3306a41811c33636861a8d645e0eb7799748889f84fb6848b941"
        );
    }

    #[test]
    fn every_input_counts() {
        let a = signature(b"k", 1, b"{}");
        assert_ne!(a, signature(b"k2", 1, b"{}"));
        assert_ne!(a, signature(b"k", 2, b"{}"));
        assert_ne!(a, signature(b"k", 1, b"{ }"));
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
    }
}
