//! The quarantine browser and replay on real services: an `unknown_point` message is
//! listed and shown by the admin API, replayed while still bad (stays quarantined with its
//! reason), replayed after its point is imported (stored once, with its archive entry, so
//! `soilmon verify` passes), and replayed again over the API and the CLI (nothing changes).
//! Every replay is recorded with who did it. Other roles get 403.

mod common;

use std::time::Duration;

use common::api::{ApiService, ADMIN, BUREAU_CITY, LAB};
use common::pipeline::sample;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// The point the message names, missing from the test registry until imported.
const LATE_POINT: &str = "441781-T-0009";

async fn replay(s: &ApiService, id: i64) -> anyhow::Result<Value> {
    let body = json!({ "ids": [id] }).to_string();
    let a = s
        .request(
            "POST",
            "/v1/quarantine/replay",
            Some(s.token(ADMIN)),
            Some(&body),
        )
        .await?;
    assert_eq!(a.status, 200, "{}", a.text);
    Ok(a.json()["results"][0].clone())
}

async fn cli(s: &ApiService, args: &[&str]) -> anyhow::Result<String> {
    let out = s.p.soilmon.command(args).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "soilmon {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[tokio::test]
async fn an_unknown_point_message_is_stored_once_after_its_point_is_imported() -> anyhow::Result<()>
{
    let s = ApiService::start(&[]).await?;
    // A hostile-looking but valid message, at a point not registered yet.
    let (topic, mut payload) = sample(
        "st09",
        "late-1",
        LATE_POINT,
        "2026-11-28T09:30:00+08:00",
        &[("Cd", 0.45), ("Pb", 20.0)],
    );
    let mut v: Value = serde_json::from_slice(&payload)?;
    v["note"] = json!("<script>alert(1)</script>");
    payload = v.to_string().into_bytes();
    s.p.publish(vec![(topic, payload.clone())]).await?;
    s.p.wait_count("SELECT count(*) FROM quarantine", 1, WAIT)
        .await?;

    // Listed by reason and station; other roles refused.
    let admin = Some(s.token(ADMIN));
    let a = s
        .get("/v1/quarantine?reason=unknown_point&station=st09", admin)
        .await?;
    assert_eq!(a.status, 200, "{}", a.text);
    let entries = a.json()["entries"].clone();
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{}", a.text);
    let id = entries[0]["id"].as_i64().unwrap_or(-1);
    assert_eq!(entries[0]["msg_id"], "late-1");
    assert_eq!(entries[0]["status"], "quarantined");
    let none = s.get("/v1/quarantine?reason=bad_type", admin).await?;
    assert_eq!(none.json()["count"], 0, "{}", none.text);
    let none = s.get("/v1/quarantine?station=st01", admin).await?;
    assert_eq!(none.json()["count"], 0, "{}", none.text);
    let none = s
        .get("/v1/quarantine?since=2999-01-01T00:00:00Z", admin)
        .await?;
    assert_eq!(none.json()["count"], 0, "{}", none.text);
    for who in [LAB, BUREAU_CITY] {
        let a = s.get("/v1/quarantine", Some(s.token(who))).await?;
        assert_eq!(a.status, 403, "{who}: {}", a.text);
        let a = s
            .request(
                "POST",
                "/v1/quarantine/replay",
                Some(s.token(who)),
                Some(r#"{"ids":[1]}"#),
            )
            .await?;
        assert_eq!(a.status, 403, "{who}: {}", a.text);
    }
    assert_eq!(s.get("/v1/quarantine", None).await?.status, 401);

    // Shown whole: the exact bytes in base64, the text as a JSON string.
    let a = s.get(&format!("/v1/quarantine/{id}"), admin).await?;
    assert_eq!(a.status, 200, "{}", a.text);
    let shown = a.json();
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(shown["raw_base64"].as_str().unwrap_or(""))?;
    assert_eq!(raw, payload);
    assert_eq!(
        shown["raw_text"].as_str().map(str::as_bytes),
        Some(&payload[..])
    );
    assert_eq!(s.get("/v1/quarantine/999999", admin).await?.status, 404);

    // Still bad: stays quarantined with its reason; nothing stored, no second entry.
    let r = replay(&s, id).await?;
    assert_eq!(r["outcome"], "refused", "{r}");
    assert_eq!(r["reason"], "unknown_point", "{r}");
    assert_eq!(s.p.count("SELECT count(*) FROM readings").await?, 0);
    assert_eq!(s.p.count("SELECT count(*) FROM quarantine").await?, 1);

    // The cause fixed: the point imported, the replay stores the message once.
    let points = s.dir.path().join("late.csv");
    std::fs::write(
        &points,
        format!(
            "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
             {LATE_POINT},Late paddy,441781,111.81,22.20,risk,paddy,6.2\n"
        ),
    )?;
    cli(&s, &["points", "import", &points.to_string_lossy()]).await?;
    let r = replay(&s, id).await?;
    assert_eq!(r["outcome"], "stored", "{r}");
    assert_eq!(s.p.count("SELECT count(*) FROM readings").await?, 2);
    assert_eq!(s.p.count("SELECT count(*) FROM samples s JOIN sources o USING (source_key) WHERE o.source = 'station'").await?, 1);
    // Judged and alerted like any message: Cd 0.45 > 0.4 opens an incident.
    s.p.wait_count("SELECT count(*) FROM incidents", 1, WAIT)
        .await?;

    // Replaying again, over the API and the CLI, changes nothing.
    let r = replay(&s, id).await?;
    assert_eq!(r["outcome"], "already_stored", "{r}");
    let out = cli(
        &s,
        &["quarantine", "replay", &id.to_string(), "--by", "ops-cli"],
    )
    .await?;
    assert!(out.contains("already_stored"), "{out}");
    assert_eq!(s.p.count("SELECT count(*) FROM readings").await?, 2);
    assert_eq!(s.p.count("SELECT count(*) FROM samples s JOIN sources o USING (source_key) WHERE o.source = 'station'").await?, 1);
    assert_eq!(s.p.count("SELECT count(*) FROM incidents").await?, 1);
    assert_eq!(
        s.p.count("SELECT count(*) FROM archive WHERE kind = 'station_message'")
            .await?,
        1
    );

    // Who replayed what is recorded, in order.
    let a = s.get(&format!("/v1/quarantine/{id}"), admin).await?;
    let shown = a.json();
    let replays: Vec<(String, String)> = shown["replays"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["replayed_by"].as_str().unwrap_or("").to_string(),
                        r["outcome"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let by = format!("api:{ADMIN}");
    assert_eq!(
        replays,
        vec![
            (by.clone(), "refused".to_string()),
            (by.clone(), "stored".to_string()),
            (by, "already_stored".to_string()),
            ("ops-cli".to_string(), "already_stored".to_string()),
        ],
        "{}",
        a.text
    );
    assert_eq!(shown["entry"]["status"], "resolved", "{}", a.text);
    let open = s.get("/v1/quarantine?status=quarantined", admin).await?;
    assert_eq!(open.json()["count"], 0, "{}", open.text);

    // The CLI browser: listed, and shown (escaping is unit-tested in cli/quarantine.rs).
    let out = cli(&s, &["quarantine", "list", "--reason", "unknown_point"]).await?;
    assert!(out.starts_with(&format!("{id}\t")), "{out}");
    let out = cli(&s, &["quarantine", "show", &id.to_string()]).await?;
    assert!(out.contains("<script>alert(1)</script>"), "{out}");

    // The replayed message is in the archive chain with its readings.
    let out = s.p.soilmon.command(&["verify"]).await?;
    assert!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
