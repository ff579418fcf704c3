//! Bad input on real services: every reason code, hostile payloads, and the service keeps
//! running. Each refused message must be quarantined whole with its code, answered on the
//! station's rejects topic, and acked (not redelivered).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use common::pipeline::{json_of, readings_topic, sample, Pipeline};
use serde_json::json;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);

fn body(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn base(msg_id: &str) -> serde_json::Value {
    json!({"msg_id": msg_id, "point_id": "441781-T-0001",
           "sampled_at": "2026-11-28T09:30:00+08:00",
           "readings": [{"metal": "Cd", "value": 0.1, "unit": "mg/kg"}]})
}

fn with(msg_id: &str, key: &str, value: serde_json::Value) -> Vec<u8> {
    let mut v = base(msg_id);
    v[key] = value;
    body(v)
}

fn reading(msg_id: &str, r: serde_json::Value) -> Vec<u8> {
    with(msg_id, "readings", json!([r]))
}

#[tokio::test]
async fn every_reason_code_is_quarantined_answered_and_survived() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let rejects = p.subscribe("soil/v1/stations/+/rejects").await?;
    let future = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let mut no_point = base("b-missing");
    no_point.as_object_mut().map(|o| o.remove("point_id"));
    let good_text = String::from_utf8(body(base("b-bom")))?;
    let mut too_many = base("b-many");
    too_many["readings"] = json!((0..33)
        .map(|i| json!({"metal": "Cd", "value": i, "unit": "mg/kg"}))
        .collect::<Vec<_>>());
    let mut oversized = base("b-toolarge");
    oversized["pad"] = json!("x".repeat(70_000));
    let long_id = "长".repeat(43);
    // (expected reason, the msg_id the reply must carry, payload)
    let cases: Vec<(&str, Option<&str>, Vec<u8>)> = vec![
        ("malformed_json", Some("b-1"), b"{\"msg_id\": \"b-1\", ".to_vec()),
        ("malformed_json", None, vec![0xff, 0xfe, 0x7b, 0x7d]),
        ("malformed_json", None, deep.into_bytes()),
        ("malformed_json", Some("b-bom"), format!("\u{feff}{good_text}").into_bytes()),
        ("too_large", None, vec![b' '; 1_000_000]),
        ("too_large", Some("b-toolarge"), body(oversized)),
        ("missing_field", Some("b-missing"), body(no_point)),
        ("bad_type", Some("b-type"), with("b-type", "readings", json!("Cd=0.1"))),
        ("bad_type", None, body(json!(["not", "an", "object"]))),
        ("bad_type", Some("b-many"), body(too_many)),
        ("bad_type", Some(long_id.as_str()), body(base(&long_id))),
        ("bad_type", None, with("b-num", "msg_id", json!(17))),
        ("unknown_point", Some("b-point"), with("b-point", "point_id", json!("441781-X-9999"))),
        ("unknown_point", Some("b-sql"), with("b-sql", "point_id", json!("'; DROP TABLE points; --"))),
        ("unknown_metal", Some("b-metal"), reading("b-metal", json!({"metal": "Fe", "value": 1, "unit": "mg/kg"}))),
        ("unknown_unit", Some("b-unit"), reading("b-unit", json!({"metal": "Cd", "value": 1, "unit": "mg/L"}))),
        ("negative_value", Some("b-neg"), reading("b-neg", json!({"metal": "Cd", "value": -0.1, "unit": "mg/kg"}))),
        (
            "non_finite_value",
            Some("b-nan"),
            br#"{"msg_id":"b-nan","point_id":"441781-T-0001","sampled_at":"2026-11-28T09:30:00+08:00","readings":[{"metal":"Cd","value":NaN,"unit":"mg/kg"}]}"#.to_vec(),
        ),
        ("non_finite_value", Some("b-inf"), reading("b-inf", json!({"metal": "Cd", "value": "Infinity", "unit": "mg/kg"}))),
        (
            "non_finite_value",
            Some("b-big"),
            br#"{"readings":[{"metal":"Cd","value":1e400,"unit":"mg/kg"}],"msg_id":"b-big","point_id":"441781-T-0001","sampled_at":"2026-11-28T09:30:00+08:00"}"#.to_vec(),
        ),
        ("implausible_value", Some("b-huge"), reading("b-huge", json!({"metal": "Pb", "value": 200, "unit": "g/kg"}))),
        ("bad_timestamp", Some("b-ts"), with("b-ts", "sampled_at", json!("yesterday at noon"))),
        ("bad_timestamp", Some("b-ts2"), with("b-ts2", "sampled_at", json!("2026-11-28T09:30:00"))),
        ("future_timestamp", Some("b-future"), with("b-future", "sampled_at", json!(future))),
        ("ph_out_of_range", Some("b-ph"), with("b-ph", "ph", json!(15.2))),
        ("station_mismatch", Some("b-station"), with("b-station", "station_id", json!("someone-else"))),
        (
            "duplicate_metal",
            Some("b-dupmetal"),
            with("b-dupmetal", "readings", json!([
                {"metal": "Cd", "value": 0.1, "unit": "mg/kg"},
                {"metal": "镉", "value": 0.2, "unit": "mg/kg"}])),
        ),
    ];
    // One station per case, so each reply is attributable.
    let msgs: Vec<(String, Vec<u8>)> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, _, b))| (readings_topic(&format!("bad{i:02}")), b.clone()))
        .collect();
    p.publish(msgs).await?;
    let n = cases.len() as i64;
    p.wait_count("SELECT count(*) FROM quarantine", n, WAIT)
        .await?;

    let rows = p
        .db()
        .await?
        .query(
            "SELECT station_id, reason, raw, detail, msg_id FROM quarantine",
            &[],
        )
        .await?;
    type Row = (String, Vec<u8>, String, Option<String>);
    let stored: HashMap<String, Row> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, String>(0),
                (r.get(1), r.get(2), r.get(3), r.get(4)),
            )
        })
        .collect();
    let replies = rejects.wait_for(cases.len(), WAIT).await;
    let replied: HashMap<String, serde_json::Value> = replies
        .iter()
        .map(|(t, b)| (t.split('/').nth(3).unwrap_or("").to_string(), json_of(b)))
        .collect();
    for (i, (code, msg_id, raw)) in cases.iter().enumerate() {
        let station = format!("bad{i:02}");
        let (reason, stored_raw, detail, stored_id) = stored
            .get(&station)
            .unwrap_or_else(|| panic!("case {i} ({code}) not quarantined"));
        assert_eq!(reason, code, "case {i}: detail {detail}");
        assert_eq!(stored_raw, raw, "case {i}: raw bytes kept whole");
        assert!(!detail.is_empty(), "case {i}: a human-readable detail");
        let reply = replied
            .get(&station)
            .unwrap_or_else(|| panic!("case {i} ({code}): no reply on the rejects topic"));
        assert_eq!(reply["reason"], *code, "case {i}");
        // The station can match every refusal: by the hash of what it sent, and by its
        // msg_id whenever the lenient scan recovers it.
        let sha = hex::encode(Sha256::digest(raw));
        assert_eq!(reply["payload_sha256"], sha, "case {i} ({code})");
        assert_eq!(
            reply["msg_id"].as_str(),
            *msg_id,
            "case {i} ({code}): reply {reply}"
        );
        assert_eq!(
            stored_id.as_deref(),
            *msg_id,
            "case {i} ({code}): quarantined id"
        );
    }
    assert_eq!(p.count("SELECT count(*) FROM readings_full").await?, 0);

    // Still up, and a message with SQL-looking text in a free field is stored verbatim.
    let mut good = base("x'); DROP TABLE readings; --");
    good["method"] = json!("XRF\"; DELETE FROM points; --");
    p.publish(vec![(readings_topic("good"), body(good))])
        .await?;
    p.wait_count("SELECT count(*) FROM readings_full", 1, WAIT)
        .await?;
    let method: Option<String> = p
        .db()
        .await?
        .query_one("SELECT method FROM readings_full", &[])
        .await?
        .get(0);
    assert_eq!(method.as_deref(), Some("XRF\"; DELETE FROM points; --"));
    assert_eq!(p.count("SELECT count(*) FROM points").await?, 4);

    // Refused messages were acked: with soilmon stopped, its session holds nothing, so
    // resuming it with a bare client gets no redelivery (the quarantine's ON CONFLICT DO
    // NOTHING would hide redelivered copies from the count below).
    let mut p = p;
    p.soilmon.terminate().await?;
    let redelivered = common::resume_session(p.broker.port, &p.soilmon.collector_client_id).await?;
    let topics: Vec<&str> = redelivered.iter().map(|(t, _)| t.as_str()).collect();
    assert!(
        topics.is_empty(),
        "redelivered after a clean stop: {topics:?}"
    );
    p.soilmon.start().await?;
    p.wait_ready(2).await?;
    p.publish(vec![sample(
        "good",
        "after",
        "441781-T-0001",
        "2026-11-28T11:00:00+08:00",
        &[("Cd", 0.1)],
    )])
    .await?;
    p.wait_count("SELECT count(*) FROM readings_full", 2, WAIT)
        .await?;
    assert_eq!(p.count("SELECT count(*) FROM quarantine").await?, n);
    Ok(())
}
