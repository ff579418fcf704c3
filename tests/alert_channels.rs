//! Alert channels beyond single webhooks, end to end on real parts (a per-test mosquitto, a
//! fresh TimescaleDB database, the `soilmon` binary): e-mail to a real SMTP server on
//! loopback (`common::smtp`, Python aiosmtpd), daily digests and reminders, overdue and
//! incident-workflow events chosen by state filter, and several deliveries in flight per
//! subscription with the order kept per incident key.

mod common;

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use common::pipeline::sample;
use common::receiver::{Receiver, Reply};
use common::smtp::{SinkTls, SmtpSink};
use common::subs::{first_arrivals, five_alerts, setup, verify, Setup, WAIT};

const USER: &str = "soilmon-alerts";
const PASSWORD: &str = "smtp-pw-9f2c";

/// `subscriptions add NAME --channel email …` with the SMTP password in a file.
async fn email_sub(s: &Setup, sink: &SmtpSink, name: &str, extra: &[&str]) -> Result<()> {
    email_sub_at(s, &sink.url(USER), name, extra).await
}

/// `subscriptions add NAME --channel email --url URL …` with the SMTP password in a file.
async fn email_sub_at(s: &Setup, url: &str, name: &str, extra: &[&str]) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, format!("{PASSWORD}\n"))?;
    let pw = pw.to_string_lossy().into_owned();
    let mut args = vec![
        "subscriptions",
        "add",
        name,
        "--bureau",
        "yangchun-epb",
        "--channel",
        "email",
        "--url",
        url,
        "--from",
        "土壤监测 <soilmon@example.org>",
        "--to",
        "duty@yangchun.example",
        "--to",
        "chief@yangchun.example",
        "--secret-file",
        &pw,
    ];
    args.extend_from_slice(extra);
    s.cli(&args).await?;
    Ok(())
}

fn text<'a>(m: &'a Value, key: &str) -> &'a str {
    m[key].as_str().unwrap_or_default()
}

fn header<'a>(m: &'a Value, name: &str) -> &'a str {
    m["headers"][name].as_str().unwrap_or_default()
}

/// One e-mail per alert: authenticated with the password from the secrets file, both
/// recipients, the subject RFC 2047-encoded UTF-8 on the wire and Chinese once decoded, a
/// text/plain UTF-8 body with a transfer encoding, Message-ID and event id headers, in
/// outbox order; `subscriptions test` goes through the real server.
#[tokio::test]
async fn email_one_message_per_alert_in_chinese() -> Result<()> {
    let s = setup(&[]).await?;
    let sink = SmtpSink::start(USER, PASSWORD)?;
    // Bad e-mail configuration is refused at add time.
    let e = s
        .add_fails(
            "yangchun-epb",
            "email",
            "smtp://mail.example:25?tls=none",
            &["--from", "a@example.org", "--to", "b@example.org"],
        )
        .await?;
    assert!(e.contains("loopback host only"), "{e}");
    let e = s
        .add_fails(
            "yangchun-epb",
            "email",
            &sink.url(USER),
            &["--from", "a@example.org"],
        )
        .await?;
    assert!(e.contains("at least one --to"), "{e}");
    email_sub(&s, &sink, "mail", &["--metal", "Cd"]).await?;
    let list = s.cli(&["subscriptions", "list"]).await?;
    assert!(!list.contains(PASSWORD), "{list}");
    let out = s.cli(&["subscriptions", "test", "mail"]).await?;
    assert!(out.contains("delivered: SMTP 250"), "{out}");
    sink.wait_for(1, WAIT, |_| true).await?;

    s.p.publish(five_alerts("m")).await?;
    let is_alert = |m: &Value| !header(m, "subject").contains("测试");
    let got = sink.wait_for(3, WAIT, is_alert).await?;
    s.wait_state("mail", "delivered", 3).await?;
    let cd: Vec<String> = {
        let rows =
            s.p.db()
                .await?
                .query(
                    "SELECT event_id::text FROM outbox WHERE kind = 'alert'
                     AND payload->>'county_code' = '441781' AND payload->>'metal' = 'Cd'
                     ORDER BY id",
                    &[],
                )
                .await?;
        rows.iter().map(|r| r.get(0)).collect()
    };
    let ids: Vec<String> = got
        .iter()
        .map(|m| header(m, "x-soilmon-event-id").to_string())
        .collect();
    assert_eq!(ids, cd);
    let first = &got[0];
    assert_eq!(text(first, "login"), USER);
    assert_eq!(text(first, "mail_from"), "soilmon@example.org");
    assert_eq!(
        first["rcpt_tos"],
        json!(["duty@yangchun.example", "chief@yangchun.example"])
    );
    assert_eq!(
        header(first, "subject"),
        "【土壤告警】阳春市 镉 新发超标（超风险筛选值）"
    );
    assert_eq!(header(first, "message-id"), format!("<{}@soilmon>", cd[0]));
    assert_eq!(header(first, "x-soilmon-attempt"), "1");
    // On the wire: the subject is an RFC 2047 encoded word, the body declared UTF-8 text
    // with a transfer encoding, and no raw Chinese in the headers.
    let raw = text(first, "raw");
    let raw_headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        raw_headers
            .to_ascii_lowercase()
            .contains("subject: =?utf-8?"),
        "{raw_headers}"
    );
    assert!(raw_headers.is_ascii(), "{raw_headers}");
    assert_eq!(text(first, "content_type"), "text/plain");
    assert_eq!(text(first, "charset"), "utf-8");
    assert!(
        ["base64", "quoted-printable"].contains(&text(first, "transfer_encoding")),
        "{}",
        text(first, "transfer_encoding")
    );
    let body = text(first, "text");
    for want in [
        "点位：Yangchun paddy（441781-T-0001）",
        "区县：阳春市（441781）",
        "测定值：0.45 mg/kg（筛选值 0.4，管制值 2 mg/kg）",
        "采样时间：2026-11-28 09:00（北京时间）",
    ] {
        assert!(body.contains(want), "{want} missing in {body}");
    }
    assert_eq!(
        header(&got[1], "subject"),
        "【土壤告警】阳春市 镉 升级（超风险管制值）"
    );
    Ok(())
}

/// The last error recorded on the deliveries of `name`, once there is one (it failed).
async fn first_error(s: &Setup, name: &str) -> Result<String> {
    let db = s.p.db().await?;
    let sql = "SELECT d.last_error FROM deliveries d JOIN subscriptions s
               ON s.id = d.subscription_id
               WHERE s.name = $1 AND d.last_error IS NOT NULL LIMIT 1";
    common::wait_until(&format!("an error recorded for {name}"), WAIT, || async {
        Ok(db.query_opt(sql, &[&name]).await?.is_some())
    })
    .await?;
    Ok(db.query_one(sql, &[&name]).await?.get(0))
}

/// E-mail over TLS to real TLS servers (aiosmtpd with a certificate from a throwaway CA made
/// at test time, `secure::make_test_ca`), each subscription trusting only its --ca-file:
/// `smtp://` upgrades with STARTTLS before AUTH and the message, `smtps://` speaks TLS from
/// the first byte. A server whose certificate does not chain to the subscription's CA is
/// refused: nothing is sent, the delivery stays pending with the certificate error recorded.
/// A server that does not offer STARTTLS behind an `smtp://` URL gets nothing in clear: the
/// delivery fails with that reason recorded.
#[tokio::test]
async fn email_over_starttls_and_implicit_tls() -> Result<()> {
    let s = setup(&[]).await?;
    let (certs, other) = (tempfile::tempdir()?, tempfile::tempdir()?);
    common::secure::make_test_ca(certs.path())?;
    common::secure::make_test_ca(other.path())?;
    let ca = certs.path().join("ca.crt").to_string_lossy().into_owned();
    let other_ca = other.path().join("ca.crt").to_string_lossy().into_owned();
    let starttls = SmtpSink::start_with(USER, PASSWORD, SinkTls::Starttls, Some(certs.path()))?;
    let implicit = SmtpSink::start_with(USER, PASSWORD, SinkTls::Implicit, Some(certs.path()))?;
    let plain = SmtpSink::start(USER, PASSWORD)?;
    let subs = [
        ("mail-starttls", starttls.tls_url(USER), &ca),
        ("mail-smtps", implicit.tls_url(USER), &ca),
        ("mail-untrusted", implicit.tls_url(USER), &other_ca),
        ("mail-no-starttls", plain.tls_url(USER), &ca),
    ];
    for (name, url, ca) in &subs {
        email_sub_at(&s, url, name, &["--ca-file", ca, "--metal", "Cd"]).await?;
    }
    for name in ["mail-starttls", "mail-smtps"] {
        let out = s.cli(&["subscriptions", "test", name]).await?;
        assert!(out.contains("delivered: SMTP 250"), "{name}: {out}");
    }
    let e = s
        .cli_fails(&["subscriptions", "test", "mail-untrusted"])
        .await?;
    assert!(
        e.contains("not delivered") && e.contains("certificate"),
        "{e}"
    );
    let e = s
        .cli_fails(&["subscriptions", "test", "mail-no-starttls"])
        .await?;
    assert!(e.contains("STARTTLS is not supported"), "{e}");

    s.p.publish(five_alerts("t")).await?;
    s.wait_state("mail-starttls", "delivered", 3).await?;
    s.wait_state("mail-smtps", "delivered", 3).await?;
    let is_alert = |m: &Value| !header(m, "subject").contains("测试");
    for (sink, upgraded) in [(&starttls, true), (&implicit, false)] {
        let got = sink.wait_for(3, WAIT, is_alert).await?;
        for m in sink.got()? {
            // TLS for the whole session: AUTH (the login) and the message went encrypted.
            assert!(
                m["tls"].as_str().is_some_and(|v| v.starts_with("TLSv1.")),
                "{m}"
            );
            assert_eq!(m["starttls"], json!(upgraded), "{m}");
            assert_eq!(text(&m, "login"), USER);
        }
        assert!(header(&got[0], "subject").contains("镉"));
    }
    let untrusted = first_error(&s, "mail-untrusted").await?;
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let no_tls = first_error(&s, "mail-no-starttls").await?;
    assert!(no_tls.contains("STARTTLS is not supported"), "{no_tls}");
    for name in ["mail-untrusted", "mail-no-starttls"] {
        assert_eq!(s.count(name, "delivered").await?, 0, "{name}");
        assert!(
            s.count(name, "pending").await? >= 1,
            "{name}: a failure is retried"
        );
    }
    // The untrusted server took no message (the handshake failed before anything was
    // sent), nor did the plain one (nothing went in clear).
    assert_eq!(
        implicit.got()?.len(),
        4,
        "mail-smtps' 3 alerts and its test message only"
    );
    assert!(plain.got()?.is_empty(), "{:?}", plain.got()?);
    Ok(())
}

/// A daily digest at 08:30 Beijing time: nothing is sent before its slot; then one e-mail
/// lists the state changes since the last digest and the incidents still open (marking
/// those open longer than --remind-days), and its deliveries count as delivered. The next
/// digest has no changes and the same open incidents. An immediate webhook with
/// --remind-days gets each event at once plus a reminder of the old incidents. The slot is
/// made due by moving the last digest back a day (digest_sent_at), not by waiting.
#[tokio::test]
async fn digests_and_reminders() -> Result<()> {
    let s = setup(&[]).await?;
    let sink = SmtpSink::start(USER, PASSWORD)?;
    let r = Receiver::start()?;
    email_sub(
        &s,
        &sink,
        "daily",
        &["--digest-at", "08:30", "--remind-days", "3"],
    )
    .await?;
    let secret = s
        .webhook(
            "remind",
            "yangchun-epb",
            &r.url("/h"),
            &["--remind-days", "3"],
        )
        .await?;
    s.p.publish(five_alerts("g")).await?;
    r.wait_for("/h", 4, WAIT, |_| true).await?;
    common::wait_until("4 pending deliveries of the digest", WAIT, || async {
        Ok(s.count("daily", "pending").await? == 4)
    })
    .await?;
    assert!(sink.got()?.is_empty(), "a digest was sent before its time");

    let back_a_day = "UPDATE subscriptions SET digest_sent_at = now() - interval '25 hours'
                      WHERE name IN ('daily', 'remind') AND removed_at IS NULL";
    s.p.db().await?.execute(back_a_day, &[]).await?;
    let got = sink.wait_for(1, WAIT, |_| true).await?;
    s.wait_state("daily", "delivered", 4).await?;
    let digest = &got[0];
    let subject = header(digest, "subject");
    assert!(subject.starts_with("【土壤告警日报】"), "{subject}");
    // Cd opened, escalated, deescalated and Pb opened at 441781-T-0001: both still open.
    assert!(subject.ends_with("：4 条变化，2 项未解除"), "{subject}");
    let body = text(digest, "text");
    for want in [
        "#### 状态变化（4 条）",
        "阳春市（441781） Yangchun paddy（441781-T-0001） 镉 0.45 mg/kg，超风险筛选值，新发超标",
        "#### 仍未解除的超标事件（2 项）",
        "【提醒：超过 3 天未解除】",
    ] {
        assert!(body.contains(want), "{want} missing in {body}");
    }
    assert!(!body.contains("441702"), "{body}");

    // The reminder of the immediate webhook: the two old incidents, signed, kind reminder.
    let reminder = r
        .wait_for("/h", 1, WAIT, |g| g.json()["kind"] == "reminder")
        .await?;
    let j = reminder[0].json();
    assert_eq!(j["open_incidents"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["remind_days"], 3);
    assert!(verify(&reminder[0], &secret));

    // The next digest: no changes since, the same incidents open.
    s.p.db().await?.execute(back_a_day, &[]).await?;
    let got = sink.wait_for(2, WAIT, |_| true).await?;
    let subject = header(&got[1], "subject");
    assert!(subject.ends_with("：0 条变化，2 项未解除"), "{subject}");
    // The same slot (the test moved the last one back): the same stable id.
    assert_eq!(header(&got[1], "message-id"), header(digest, "message-id"));
    Ok(())
}

/// Overdue events (network management) and incident-workflow events (the console) reach
/// only the subscriptions that name them in --state, within the bureau's scope and the
/// metal filter; a subscription without --state gets exceedance alerts only.
#[tokio::test]
async fn overdue_and_workflow_events_by_state_filter() -> Result<()> {
    let s = setup(&[]).await?;
    let r = Receiver::start()?;
    s.webhook(
        "workflow",
        "yangchun-epb",
        &r.url("/workflow"),
        &["--state", "incident_action", "--metal", "Cd"],
    )
    .await?;
    s.webhook(
        "overdue",
        "yangchun-epb",
        &r.url("/overdue"),
        &["--state", "overdue", "--state", "overdue_cleared"],
    )
    .await?;
    s.webhook("alerts", "yangchun-epb", &r.url("/alerts"), &[])
        .await?;
    // The events as the console and the overdue check write them to the outbox.
    let events = [
        (
            "incident_action",
            json!({"event": "incident_action", "action": "acknowledge",
            "incident_id": uuid::Uuid::now_v7(), "point_id": "441781-T-0001",
            "county_code": "441781", "metal": "Cd", "actor": "张三", "detail": "",
            "at": "2026-12-01T08:00:00Z"}),
        ),
        (
            "incident_action",
            json!({"event": "incident_action", "action": "note",
            "incident_id": uuid::Uuid::now_v7(), "point_id": "441781-T-0001",
            "county_code": "441781", "metal": "Pb", "actor": "张三", "detail": "x",
            "at": "2026-12-01T08:01:00Z"}),
        ),
        (
            "alert",
            json!({"state": "overdue", "point_id": "441781-T-0003",
            "county_code": "441781", "land_use": "orchard", "overdue_since": "2026-11-01T00:00:00Z",
            "metals": [{"metal": "Cd"}]}),
        ),
        (
            "alert",
            json!({"state": "overdue", "point_id": "441702-T-0001",
            "county_code": "441702", "land_use": "dry_land", "overdue_since": "2026-11-01T00:00:00Z"}),
        ),
        (
            "alert",
            json!({"state": "overdue_cleared", "point_id": "441781-T-0003",
            "county_code": "441781", "overdue_since": "2026-11-01T00:00:00Z"}),
        ),
    ];
    let db = s.p.db().await?;
    for (kind, mut payload) in events {
        let id = uuid::Uuid::now_v7();
        payload["event_id"] = json!(id);
        db.execute(
            "INSERT INTO outbox (event_id, kind, topic, payload) VALUES ($1, $2, 'soil/v1/test', $3)",
            &[&id, &kind, &payload],
        )
        .await?;
    }
    s.p.publish(vec![sample(
        "st01",
        "w1",
        "441781-T-0001",
        "2026-11-28T09:00:00+08:00",
        &[("Cd", 0.45)],
    )])
    .await?;
    let workflow = r.wait_for("/workflow", 1, WAIT, |_| true).await?;
    let overdue = r.wait_for("/overdue", 2, WAIT, |_| true).await?;
    let alerts = r.wait_for("/alerts", 1, WAIT, |_| true).await?;
    // Everything is fanned out before counting what each got.
    common::wait_until("fan-out", WAIT, || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM outbox WHERE fanned_out_at IS NULL",
                &[],
            )
            .await?
            .get(0);
        Ok(n == 0)
    })
    .await?;
    let total = |name: &'static str| {
        let db = &db;
        async move {
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FROM deliveries d JOIN subscriptions s
                     ON s.id = d.subscription_id WHERE s.name = $1",
                    &[&name],
                )
                .await?
                .get(0);
            anyhow::Ok(n)
        }
    };
    assert_eq!(total("workflow").await?, 1);
    assert_eq!(total("overdue").await?, 2);
    assert_eq!(total("alerts").await?, 1);
    assert_eq!(workflow[0].json()["action"], "acknowledge");
    let states: Vec<Value> = overdue.iter().map(|g| g.json()["state"].clone()).collect();
    assert_eq!(states, [json!("overdue"), json!("overdue_cleared")]);
    assert_eq!(alerts[0].json()["state"], "opened");
    Ok(())
}

/// A slow receiver (300 ms an answer) and --concurrency 4: several deliveries are in flight
/// at once, on different incident keys (point × metal), while each key's events arrive in
/// outbox order, even though the first request fails and is retried.
#[tokio::test]
async fn concurrency_keeps_the_order_per_incident_key() -> Result<()> {
    let s = setup(&[]).await?;
    let r = Receiver::start()?;
    r.set_default("/c", Reply::Delay(300));
    // The first request is refused for 3 s (Retry-After): its incident must wait for it.
    r.script("/c", &[Reply::RetryAfter(503, 3)]);
    s.webhook("conc", "city-epb", &r.url("/c"), &["--concurrency", "4"])
        .await?;
    s.cli(&["subscriptions", "pause", "conc"]).await?;
    // Two keys at each of two points, three state changes each: twelve events.
    let mut msgs = Vec::new();
    let steps = [
        ("09", 0.45, 150.0, 0.35, 150.0),
        ("10", 2.5, 600.0, 4.0, 800.0),
        ("11", 0.5, 150.0, 0.35, 150.0),
    ];
    for (i, (hour, cd1, pb1, cd2, pb2)) in steps.into_iter().enumerate() {
        let at = format!("2026-11-28T{hour}:00:00+08:00");
        msgs.push(sample(
            "st01",
            &format!("c1-{i}"),
            "441781-T-0001",
            &at,
            &[("Cd", cd1), ("Pb", pb1)],
        ));
        msgs.push(sample(
            "st02",
            &format!("c2-{i}"),
            "441702-T-0001",
            &at,
            &[("Cd", cd2), ("Pb", pb2)],
        ));
    }
    s.p.publish(msgs).await?;
    common::wait_until("12 pending deliveries", WAIT, || async {
        Ok(s.count("conc", "pending").await? == 12)
    })
    .await?;
    s.cli(&["subscriptions", "resume", "conc"]).await?;
    s.wait_state("conc", "delivered", 12).await?;
    let got = r.got("/c");
    let rows =
        s.p.db()
            .await?
            .query(
                "SELECT event_id::text, payload->>'point_id', payload->>'metal' FROM outbox
             WHERE kind = 'alert' ORDER BY id",
                &[],
            )
            .await?;
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut key_of = BTreeMap::new();
    for row in &rows {
        let key = format!("{}|{}", row.get::<_, String>(1), row.get::<_, String>(2));
        want.entry(key.clone()).or_default().push(row.get(0));
        key_of.insert(row.get::<_, String>(0), key);
    }
    assert_eq!(want.len(), 4);
    let mut arrived: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // The first request was refused: the order that counts is the accepted ones.
    for id in first_arrivals(&got[1..]) {
        let key = key_of.get(&id).context("an unknown event")?.clone();
        arrived.entry(key).or_default().push(id);
    }
    assert_eq!(arrived, want, "order per incident key");
    let all: HashSet<String> = key_of.keys().cloned().collect();
    assert_eq!(first_arrivals(&got).len(), all.len());
    assert!(
        r.max_in_flight() >= 2,
        "deliveries were sent one at a time ({})",
        r.max_in_flight()
    );
    Ok(())
}
