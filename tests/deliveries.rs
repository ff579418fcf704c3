//! Alert deliveries to subscriptions, end to end on real parts: a per-test mosquitto, a
//! fresh TimescaleDB database, the `soilmon` binary, and a real HTTP receiver on loopback
//! (`common::receiver`, an axum server that verifies nothing itself: the tests check the
//! signatures and payloads it recorded).

mod common;

use std::time::Duration;

use anyhow::Result;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use common::pipeline::sample;
use common::receiver::{Got, Receiver, Reply};
use common::subs::{first_arrivals, five_alerts, setup, verify, WAIT};

/// Filters at add time and at delivery: a 441781 bureau's Cd-intervention-only subscription
/// gets exactly that event; its all-events subscription its county's four, in order; a
/// city-wide one all five. Every request is signed with the subscription's own secret.
#[tokio::test]
async fn filters_signatures_and_order() -> Result<()> {
    let s = setup(&[]).await?;
    let r = Receiver::start()?;
    // Bad configuration is refused at add time, with the reason.
    let e = s
        .add_fails(
            "yangchun-epb",
            "webhook",
            &r.url("/x"),
            &["--county", "441702"],
        )
        .await?;
    assert!(
        e.contains("county \"441702\" is outside the bureau's scope (441781)"),
        "{e}"
    );
    let e = s
        .add_fails("yangchun-epb", "webhook", &r.url("/x"), &["--metal", "Fe"])
        .await?;
    assert!(e.contains("unknown metal \"Fe\""), "{e}");
    let e = s.add_fails("nobody", "webhook", &r.url("/x"), &[]).await?;
    assert!(e.contains("no active bureau \"nobody\""), "{e}");
    let e = s
        .add_fails("yangchun-epb", "webhook", "ftp://127.0.0.1/x", &[])
        .await?;
    assert!(e.contains("must be http(s)://"), "{e}");
    // An unreachable URL is allowed at add, and `test` says so.
    let dead_port = common::free_port();
    s.webhook(
        "nowhere",
        "yangchun-epb",
        &format!("http://127.0.0.1:{dead_port}/h"),
        &[],
    )
    .await?;
    let e = s.cli_fails(&["subscriptions", "test", "nowhere"]).await?;
    assert!(e.contains("not delivered: unreachable"), "{e}");
    s.cli(&["subscriptions", "remove", "nowhere"]).await?;

    let cd = s
        .webhook(
            "yc-cd-intervention",
            "yangchun-epb",
            &r.url("/cd"),
            &[
                "--metal",
                "Cd",
                "--level",
                "intervention",
                "--header",
                "X-Bureau: yangchun",
            ],
        )
        .await?;
    let all = s
        .webhook("yc-all", "yangchun-epb", &r.url("/all"), &[])
        .await?;
    let city = s
        .webhook("city-all", "city-epb", &r.url("/city"), &[])
        .await?;
    // `test` goes through the real channel and prints the receiver's answer.
    let out = s.cli(&["subscriptions", "test", "yc-all"]).await?;
    assert!(out.contains("delivered: HTTP 200"), "{out}");
    let test = r.wait_for("/all", 1, WAIT, |_| true).await?;
    assert_eq!(test[0].json()["test"], true);
    assert!(verify(&test[0], &all));
    // Secrets never appear in listings.
    let list = s.cli(&["subscriptions", "list"]).await?;
    for secret in [&cd, &all, &city] {
        assert!(!list.contains(secret.as_str()), "{list}");
    }

    s.p.publish(five_alerts("f")).await?;
    let is_alert = |g: &Got| g.json().get("test").is_none();
    let got_city = r.wait_for("/city", 5, WAIT, is_alert).await?;
    let got_all = r.wait_for("/all", 4, WAIT, is_alert).await?;
    let got_cd = r.wait_for("/cd", 1, WAIT, is_alert).await?;
    s.wait_state("city-all", "delivered", 5).await?;

    assert_eq!(first_arrivals(&got_city), s.events(None).await?);
    assert_eq!(first_arrivals(&got_all), s.events(Some("441781")).await?);
    let only = got_cd[0].json();
    assert_eq!(
        (
            only["metal"].as_str(),
            only["level"].as_str(),
            only["state"].as_str()
        ),
        (Some("Cd"), Some("intervention"), Some("escalated"))
    );
    assert_eq!(got_cd[0].header("x-bureau"), "yangchun");
    assert_eq!(
        got_cd[0].header("x-soilmon-event-id"),
        only["event_id"].as_str().unwrap_or("")
    );
    // Nothing else arrives for the filtered one (the city-wide one has seen all five).
    assert_eq!(r.got("/cd").len(), 1);
    assert_eq!(s.count("yc-cd-intervention", "delivered").await?, 1);
    for (got, secret) in [(&got_cd, &cd), (&got_all, &all), (&got_city, &city)] {
        for g in got.iter() {
            assert!(verify(g, secret), "bad signature on {}", g.uri);
            assert!(!verify(g, "another secret"));
        }
    }
    Ok(())
}

/// The receiver is down for 60 s while alerts are raised: once it is back, every event
/// arrives, in order, each at least once; the retries are visible in the deliveries.
#[tokio::test]
async fn receiver_down_for_a_minute_then_everything_in_order() -> Result<()> {
    // Enough attempts for a minute of 2 s back-offs.
    let s = setup(&[("SOILMON__DELIVER__MAX_ATTEMPTS", "100")]).await?;
    let mut r = Receiver::start()?;
    let secret = s.webhook("yc", "yangchun-epb", &r.url("/h"), &[]).await?;
    r.stop();
    let down = std::time::Instant::now();
    let msgs = five_alerts("d");
    for chunk in msgs.chunks(2) {
        s.p.publish(chunk.to_vec()).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    // Attempts fail while it is down.
    common::wait_until("failed attempts", WAIT, || async {
        let db = s.p.db().await?;
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM deliveries WHERE attempts > 1 AND state = 'pending'",
                &[],
            )
            .await?
            .get(0);
        Ok(n > 0)
    })
    .await?;
    let rest = Duration::from_secs(60).saturating_sub(down.elapsed());
    tokio::time::sleep(rest).await;
    assert!(r.got("/h").is_empty());
    r.start_again()?;
    let got = r
        .wait_for("/h", 4, Duration::from_secs(90), |_| true)
        .await?;
    s.wait_state("yc", "delivered", 4).await?;
    let want = s.events(Some("441781")).await?;
    assert_eq!(want.len(), 4);
    assert_eq!(first_arrivals(&r.got("/h")), want);
    assert!(got.iter().all(|g| verify(g, &secret)));
    Ok(())
}

/// 500 then 429 with Retry-After, then 200; a receiver that hangs (timeout) then answers; a
/// permanently failing one ends dead-lettered, listed by `deliveries list --failed` and
/// delivered after `deliveries retry` once it works; a healthy subscription beside them
/// receives everything meanwhile.
#[tokio::test]
async fn retries_timeouts_and_dead_letters() -> Result<()> {
    let s = setup(&[("SOILMON__DELIVER__MAX_ATTEMPTS", "3")]).await?;
    let r = Receiver::start()?;
    r.script("/flaky", &[Reply::Status(500), Reply::RetryAfter(429, 3)]);
    r.script("/hang", &[Reply::Hang]);
    r.set_default("/dead", Reply::Status(500));
    for (name, path) in [
        ("flaky", "/flaky"),
        ("hang", "/hang"),
        ("dead", "/dead"),
        ("ok", "/ok"),
    ] {
        s.webhook(
            name,
            "yangchun-epb",
            &r.url(path),
            &["--metal", "Cd", "--state", "opened"],
        )
        .await?;
    }
    s.p.publish(vec![sample(
        "st01",
        "r1",
        "441781-T-0001",
        "2026-11-28T09:00:00+08:00",
        &[("Cd", 0.45)],
    )])
    .await?;
    let ok = r.wait_for("/ok", 1, WAIT, |_| true).await?;
    let event = ok[0].json()["event_id"].clone();

    let flaky = r.wait_for("/flaky", 3, WAIT, |_| true).await?;
    assert!(flaky.iter().all(|g| g.json()["event_id"] == event));
    let attempts: Vec<&str> = flaky
        .iter()
        .map(|g| g.header("x-soilmon-attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    // Retry-After: 3 was honoured: the third attempt came no sooner.
    assert!(flaky[2].at.duration_since(flaky[1].at) >= Duration::from_millis(2900));
    s.wait_state("flaky", "delivered", 1).await?;

    let hang = r.wait_for("/hang", 2, WAIT, |_| true).await?;
    assert_eq!(hang[1].json()["event_id"], event);
    s.wait_state("hang", "delivered", 1).await?;

    s.wait_state("dead", "dead", 1).await?;
    assert_eq!(r.got("/dead").len(), 3);
    let failed = s.cli(&["deliveries", "list", "--failed"]).await?;
    assert!(failed.contains("\tdead\tattempts=3\t"), "{failed}");
    assert!(failed.contains("error=HTTP 500"), "{failed}");
    assert!(!failed.contains("\tok\t"), "{failed}");
    // A second event reaches the healthy subscription; the dead letter does not block it.
    s.p.publish(vec![sample(
        "st01",
        "r2",
        "441781-T-0003",
        "2026-11-28T09:00:00+08:00",
        &[("Cd", 0.5)],
    )])
    .await?;
    r.wait_for("/ok", 2, WAIT, |_| true).await?;
    s.wait_state("dead", "dead", 2).await?;
    // Fixed receiver, retried by hand: both delivered.
    r.set_default("/dead", Reply::Ok);
    let out = s
        .cli(&["deliveries", "retry", "--subscription", "dead"])
        .await?;
    assert!(
        out.starts_with("2 dead-lettered deliveries queued again"),
        "{out}"
    );
    s.wait_state("dead", "delivered", 2).await?;
    let url = format!("http://{}/metrics", s.p.soilmon.http_addr());
    let wants = [
        "soilmon_deliveries_total{channel=\"webhook\",outcome=\"dead\"} 2",
        "soilmon_deliveries_total{channel=\"webhook\",outcome=\"retry\"}",
        "soilmon_delivery_queue_depth{subscription=\"ok\"} 0",
        "soilmon_delivery_queue_age_seconds{subscription=\"dead\"}",
    ];
    // The queue gauges are refreshed every 5 s.
    common::wait_until("delivery metrics", Duration::from_secs(20), || async {
        let page = reqwest::get(&url).await?.text().await?;
        Ok(wants.iter().all(|w| page.contains(w)))
    })
    .await?;
    Ok(())
}

/// soilmon is SIGKILLed while a delivery is in flight (the receiver holds the request): the
/// delivery was claimed, not confirmed, and is sent again after the restart.
#[tokio::test]
async fn sigkill_mid_delivery_loses_nothing() -> Result<()> {
    let mut s = setup(&[]).await?;
    let r = Receiver::start()?;
    r.script("/h", &[Reply::Hang]);
    s.webhook("yc", "yangchun-epb", &r.url("/h"), &[]).await?;
    s.p.publish(five_alerts("k")).await?;
    let first = r.wait_for("/h", 1, WAIT, |_| true).await?;
    s.p.soilmon.kill9()?;
    let held = first[0].json()["event_id"].clone();
    assert_eq!(s.count("yc", "delivered").await?, 0);
    s.p.soilmon.start().await?;
    s.wait_state("yc", "delivered", 4).await?;
    let got = r.got("/h");
    let want = s.events(Some("441781")).await?;
    assert_eq!(first_arrivals(&got), want);
    let again = got.iter().filter(|g| g.json()["event_id"] == held).count();
    assert!(again >= 2, "the held event was sent again ({again} times)");
    Ok(())
}

/// DingTalk (signed mode) and WeCom robots: their markdown JSON shapes, Chinese text with
/// point, county, metal, value against thresholds, level, state and the console link; past
/// the robot's rate limit the pending alerts are folded into one summary.
#[tokio::test]
async fn robots_markdown_signing_and_folding() -> Result<()> {
    let s = setup(&[
        ("SOILMON__DELIVER__ROBOT_PER_MINUTE", "3"),
        (
            "SOILMON__DELIVER__CONSOLE_BASE_URL",
            "https://console.example",
        ),
    ])
    .await?;
    let r = Receiver::start()?;
    let dir = tempfile::tempdir()?;
    let sec = dir.path().join("ding-secret");
    std::fs::write(&sec, "SECtest\n")?;
    let ding_url = format!("{}?access_token=tok123", r.url("/robot/send"));
    s.cli(&[
        "subscriptions",
        "add",
        "ding",
        "--bureau",
        "yangchun-epb",
        "--channel",
        "dingtalk",
        "--url",
        &ding_url,
        "--secret-file",
        &sec.to_string_lossy(),
    ])
    .await?;
    let wecom_url = format!("{}?key=k456", r.url("/cgi-bin/webhook/send"));
    s.cli(&[
        "subscriptions",
        "add",
        "wecom",
        "--bureau",
        "yangchun-epb",
        "--channel",
        "wecom",
        "--url",
        &wecom_url,
        "--metal",
        "Cd",
    ])
    .await?;
    let list = s.cli(&["subscriptions", "list"]).await?;
    assert!(!list.contains("tok123") && !list.contains("k456"), "{list}");
    // One message, eight metals above screening: eight alerts at once.
    s.p.publish(vec![sample(
        "st01",
        "b1",
        "441781-T-0001",
        "2026-11-28T09:30:00+08:00",
        &[
            ("Cd", 0.45),
            ("Pb", 150.0),
            ("Hg", 0.6),
            ("As", 40.0),
            ("Cr", 300.0),
            ("Ni", 80.0),
            ("Cu", 60.0),
            ("Zn", 250.0),
        ],
    )])
    .await?;
    s.wait_state("ding", "delivered", 8).await?;
    let ding = r.got("/robot/send");
    assert_eq!(ding.len(), 3, "two singles then one fold of six");
    for g in &ding {
        // Signed mode: access_token kept, timestamp and sign added; sign checks out.
        let url = reqwest::Url::parse(&format!("http://x{}", g.uri))?;
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        assert_eq!(q["access_token"], "tok123");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"SECtest")?;
        mac.update(format!("{}\nSECtest", q["timestamp"]).as_bytes());
        use base64::Engine as _;
        let want = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(q["sign"], want);
        let body = g.json();
        assert_eq!(body["msgtype"], "markdown");
        assert!(body["markdown"]["title"].is_string() && body["markdown"]["text"].is_string());
    }
    let first: Value = ding[0].json();
    let text = first["markdown"]["text"].as_str().unwrap_or_default();
    for want in [
        "点位：Yangchun paddy（441781-T-0001）",
        "区县：阳春市（441781）",
        "状态：新发超标",
        "级别：超风险筛选值",
        "https://console.example/incidents/",
    ] {
        assert!(text.contains(want), "{want} missing in {text}");
    }
    let fold = ding[2].json();
    assert_eq!(fold["markdown"]["title"], "【土壤告警汇总】6 条告警");

    s.wait_state("wecom", "delivered", 1).await?;
    let wecom = r.got("/cgi-bin/webhook/send");
    assert_eq!(wecom.len(), 1);
    assert!(wecom[0].uri.ends_with("?key=k456"));
    let body = wecom[0].json();
    assert_eq!(body["msgtype"], "markdown");
    let content = body["markdown"]["content"].as_str().unwrap_or_default();
    for want in [
        "镉",
        "测定值：0.45 mg/kg（筛选值 0.4，管制值 2 mg/kg）",
        "阳春市",
        "采样时间：2026-11-28 09:30（北京时间）",
    ] {
        assert!(content.contains(want), "{want} missing in {content}");
    }
    Ok(())
}

/// Alerts raised while no subscription exists are written already fanned out (schema 20): the
/// engine neither reads nor rewrites them, and a subscription added later does not receive
/// them. An alert raised once the subscription exists is fanned out and delivered to it.
#[tokio::test]
async fn alerts_raised_before_any_subscription_are_written_fanned_out() -> Result<()> {
    let s = setup(&[]).await?;
    let r = Receiver::start()?;
    s.p.publish(five_alerts("e")).await?;
    let alerts = "SELECT count(*) FROM outbox WHERE kind = 'alert'";
    s.p.wait_count(alerts, 5, WAIT).await?;
    let unfanned = "SELECT count(*) FROM outbox WHERE kind = 'alert' AND fanned_out_at IS NULL";
    assert_eq!(s.p.count(unfanned).await?, 0);

    s.webhook("city", "city-epb", &r.url("/c"), &[]).await?;
    // Dry land pH 7.0: Pb intervention 700, so 800 opens a new incident: one alert.
    let later = sample(
        "st02",
        "after1",
        "441702-T-0001",
        "2026-11-29T11:00:00+08:00",
        &[("Pb", 800.0)],
    );
    s.p.publish(vec![later]).await?;
    s.p.wait_count(alerts, 6, WAIT).await?;
    s.wait_state("city", "delivered", 1).await?;
    let events = s.events(None).await?;
    assert_eq!(first_arrivals(&r.got("/c")), events[5..].to_vec());
    let db = s.p.db().await?;
    let deliveries: i64 = db
        .query_one("SELECT count(*) FROM deliveries", &[])
        .await?
        .get(0);
    assert_eq!(
        deliveries, 1,
        "only the alert raised after the subscription"
    );
    Ok(())
}

/// The engine's claim and record statements on a queue written straight into a fresh
/// database (no service running): a subscription of concurrency 1 gets its oldest pending
/// deliveries as one batch, in outbox order; one of concurrency 2 the heads of its two oldest
/// incident keys, each with what follows it in its key; a paused one nothing. A second claim
/// (another instance) gets nothing of what is leased, nor of a key in flight. After a
/// recorded failure, the failed delivery holds its key back until its retry is due (the
/// deliveries after it, released unattempted, are not sent past it); a dead letter does
/// not. Released deliveries keep their attempt count.
#[tokio::test]
async fn claims_are_batches_in_order_and_leases_hold_their_key() -> Result<()> {
    use soilmon::store::deliveries::{self as store, ClaimLimit, Mark};
    let db = common::TestDb::create().await?;
    let mut c = db.client().await?;
    soilmon::store::migrate::run(&mut c).await?;
    c.batch_execute(
        "INSERT INTO broker_identities (username, kind, password_hash, all_counties)
         VALUES ('b', 'bureau', 'x', true);
         INSERT INTO subscriptions (name, bureau, channel, target) VALUES
             ('one', 'b', 'webhook', 'http://127.0.0.1:9/'),
             ('two', 'b', 'webhook', 'http://127.0.0.1:9/'),
             ('paused', 'b', 'webhook', 'http://127.0.0.1:9/');
         UPDATE subscriptions SET paused = true WHERE name = 'paused';
         -- 12 events on three keys: p1|Cd, p2|Cd, p3|Cd, p1|Cd, p2|Cd, p3|Cd, …
         INSERT INTO outbox (event_id, kind, topic, payload)
         SELECT gen_random_uuid(), 'alert', 't',
                jsonb_build_object('point_id', 'p' || (1 + (i - 1) % 3), 'metal', 'Cd', 'i', i)
         FROM generate_series(1, 12) i;
         INSERT INTO deliveries (subscription_id, outbox_id, event_id, order_key)
         SELECT s.id, o.id, o.event_id, (o.payload->>'point_id') || '|Cd'
         FROM subscriptions s, outbox o ORDER BY o.id, s.id;",
    )
    .await?;
    let sub = |name: &str| {
        let c = &c;
        let name = name.to_string();
        async move {
            let id: i64 = c
                .query_one("SELECT id FROM subscriptions WHERE name = $1", &[&name])
                .await?
                .get(0);
            anyhow::Ok(id)
        }
    };
    let (one, two) = (sub("one").await?, sub("two").await?);
    let i = |cl: &store::Claimed| cl.event.payload["i"].as_i64().unwrap_or(0);
    let of = |v: &[store::Claimed], s: i64| -> Vec<i64> {
        v.iter().filter(|c| c.subscription_id == s).map(i).collect()
    };
    let cfg = soilmon::config::DatabaseConfig {
        url: db.url.clone(),
        pool_size: 2,
        retry_min_ms: 100,
        retry_max_ms: 1000,
        commit_timeout_ms: 30_000,
        tls_ca_file: Default::default(),
    };
    let pool = soilmon::store::pool(&cfg)?;
    let (mut a, mut b) = (pool.get().await?, pool.get().await?);
    let limits = [
        ClaimLimit {
            subscription_id: one,
            concurrency: 1,
            batch: 5,
        },
        ClaimLimit {
            subscription_id: two,
            concurrency: 2,
            batch: 2,
        },
    ];
    async fn claim(
        db: &mut deadpool_postgres::Client,
        limits: &[soilmon::store::deliveries::ClaimLimit],
    ) -> Result<Vec<soilmon::store::deliveries::Claimed>> {
        let lease = Duration::from_secs(60);
        Ok(soilmon::store::deliveries::claim_batches(db, 10, &[], limits, 1, 100, lease).await?)
    }
    let first = claim(&mut a, &limits).await?;
    assert_eq!(
        of(&first, one),
        [1, 2, 3, 4, 5],
        "one batch, in outbox order"
    );
    // Of its oldest 2 × 2 deliveries (1–4), the keys with the two oldest heads: p1 (1, 4)
    // and p2 (2); p3 (3) waits for a free slot.
    assert_eq!(of(&first, two), [1, 2, 4]);
    assert_eq!(first.len(), 8, "nothing of the paused subscription");
    assert!(first.iter().all(|c| c.attempts == 1));
    // Another instance: subscription one has its batch in flight, two its two keys.
    assert!(claim(&mut b, &limits).await?.is_empty());

    // One: 1 and 2 delivered, 3 failed (retry in a minute), 4 and 5 not attempted.
    let ids: Vec<i64> = first
        .iter()
        .filter(|c| c.subscription_id == one)
        .map(|c| c.id)
        .collect();
    let retry = Mark::Retry {
        after: Duration::from_secs(60),
        error: "HTTP 503".into(),
    };
    let marks = [
        (ids[0], Mark::Delivered),
        (ids[1], Mark::Delivered),
        (ids[2], retry),
        (ids[3], Mark::Release),
        (ids[4], Mark::Release),
    ];
    store::record(&mut a, &marks).await?;
    assert!(
        of(&claim(&mut b, &limits).await?, one).is_empty(),
        "3 waits for its retry: nothing is sent past it"
    );
    c.execute(
        "UPDATE deliveries SET next_attempt_at = now() WHERE id = $1",
        &[&ids[2]],
    )
    .await?;
    let again = claim(&mut b, &limits).await?;
    assert_eq!(
        of(&again, one),
        [3, 4, 5, 6, 7],
        "the retry first, then in order"
    );
    let attempts: Vec<i32> = again
        .iter()
        .filter(|c| c.subscription_id == one)
        .map(|c| c.attempts)
        .collect();
    assert_eq!(
        attempts,
        [2, 1, 1, 1, 1],
        "a release gives the attempt back"
    );
    // 3 dead-lettered: the subscription goes on with 4.
    let ids: Vec<i64> = again
        .iter()
        .filter(|c| c.subscription_id == one)
        .map(|c| c.id)
        .collect();
    let mut marks: Vec<(i64, Mark)> = vec![(
        ids[0],
        Mark::Dead {
            error: "HTTP 400".into(),
        },
    )];
    marks.extend(ids[1..].iter().map(|id| (*id, Mark::Release)));
    store::record(&mut b, &marks).await?;
    // A delivery not yet due further back (7) ends the batch: nothing is sent past it.
    c.execute(
        "UPDATE deliveries d SET next_attempt_at = now() + interval '1 hour' FROM outbox o
         WHERE o.id = d.outbox_id AND d.subscription_id = $1 AND o.payload->>'i' = '7'",
        &[&one],
    )
    .await?;
    assert_eq!(of(&claim(&mut a, &limits).await?, one), [4, 5, 6]);
    let states: Vec<(String, Option<String>)> = c
        .query(
            "SELECT d.state, d.last_error FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.subscription_id = $1 AND (o.payload->>'i')::int <= 3 ORDER BY o.id",
            &[&one],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        states,
        [
            ("delivered".to_string(), None),
            ("delivered".to_string(), None),
            ("dead".to_string(), Some("HTTP 400".to_string())),
        ]
    );
    drop((a, b, c));
    pool.close();
    db.drop_db().await?;
    Ok(())
}
