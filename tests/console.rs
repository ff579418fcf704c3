//! The web console and the public page in a real browser (headless Chromium over WebDriver)
//! against a real soilmon with its own TimescaleDB database and Mosquitto:
//!
//! - a 441781 bureau signs in, sees 441781's points on the map and none of 441702's, a new
//!   exceedance published over MQTT appears in the feed without a reload, they acknowledge,
//!   note and close the incident; the actions are in the archive, `soilmon verify` passes,
//!   and the actions are published on MQTT; `<script>` and `"><img onerror=…>` in point
//!   names and notes are shown as text; a form without the CSRF token is refused; another
//!   county's point is the same 404 as a missing one; admin pages are 403;
//! - a lab user uploads the shipped example as xlsx (accepted) and as CSV (the same content
//!   hash: the original report, nothing stored twice), and a bad file (line-numbered errors,
//!   filterable, downloadable as CSV); a session upload without the CSRF header is refused;
//! - an admin finds an `unknown_point` message in the quarantine browser (its payload shown
//!   as text), imports the point from the registry page (a bad file first: every bad line),
//!   replays the message (stored once), and replays it twice more (nothing changes);
//! - the public page per county, its CSV / xlsx / GeoJSON downloads with the configured
//!   coordinate precision and only the public point types; the admin points list.
//!
//! Screenshots go to docs/screenshots/.

mod common;
// Only this test binary drives a browser: the helper is not part of `common` (which every
// test binary compiles).
#[path = "common/browser.rs"]
mod browser;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use browser::Browser;
use chrono::Utc;
use common::api::{ApiService, ADMIN, BUREAU_YC, LAB};
use common::pipeline::sample;
use common::{repo_path, wait_until};
use serde_json::Value;

const XSS_NAME: &str = "<script>window.__xss=1</script>";
const XSS_ATTR: &str = "\"><img src=x onerror=window.__xss=2>";
const XSS_NOTE: &str = "\"><img src=x onerror=window.__xss=3><script>window.__xss=4</script>";

/// The demo registry plus two 441781 points whose names are markup.
fn extra_points() -> String {
    let demo = std::fs::read_to_string(repo_path("config/points/demo.csv")).unwrap_or_default();
    format!(
        "{demo}441781-R-0900,{XSS_NAME},441781,111.75,22.15,risk,paddy,6.0\n\
         441781-B-0901,\"{}\",441781,111.761234,22.164321,basic,dry_land,\n",
        XSS_ATTR.replace('"', "\"\"")
    )
}

/// An API service with the demo points and the markup points, restarted so its registry
/// snapshot has them.
async fn start(env: &[(&str, &str)]) -> Result<ApiService> {
    let mut s = ApiService::start(env).await?;
    let file = s.dir.path().join("points.csv");
    std::fs::write(&file, extra_points())?;
    let out =
        s.p.soilmon
            .command(&["points", "import", &file.to_string_lossy()])
            .await?;
    ensure!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.p.soilmon.terminate().await?;
    s.p.soilmon.start().await?;
    s.p.wait_ready(2).await?;
    wait_until("healthz", Duration::from_secs(30), || async {
        Ok(s.get("/healthz", None).await?.status == 200)
    })
    .await?;
    Ok(s)
}

/// `window.__xss` is unset and no `img[src=x]` exists: no injected markup ran or rendered.
async fn no_injection(b: &Browser) -> Result<()> {
    let v = b
        .js("return [typeof window.__xss, document.querySelectorAll('img[src=\"x\"]').length]")
        .await?;
    ensure!(
        v == serde_json::json!(["undefined", 0]),
        "markup was injected: {v}"
    );
    Ok(())
}

fn now_minus(minutes: i64) -> String {
    (Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bureau_map_feed_workflow_and_verify() -> Result<()> {
    let s = start(&[]).await?;
    let b = Browser::start().await?;
    let actions_sub = s.p.subscribe("soil/v1/alerts/441781/#").await?;
    b.sign_in(&s.base, s.token(BUREAU_YC)).await?;

    // The map: 441781's points only, markup names as text.
    b.goto(&format!("{}/console/map", s.base)).await?;
    b.wait_css("#map[data-loaded]").await?;
    b.wait_css(".pt").await?;
    let mut shown = Vec::new();
    for e in b.all(".pt").await? {
        shown.push(e.attr("data-point").await?.unwrap_or_default());
    }
    let db = s.p.db().await?;
    let expected: i64 = db
        .query_one(
            "SELECT count(*) FROM points WHERE county_code = '441781'",
            &[],
        )
        .await?
        .get(0);
    ensure!(
        shown.iter().all(|p| p.starts_with("441781-")),
        "another county on the map: {shown:?}"
    );
    ensure!(shown.len() as i64 == expected, "{shown:?} vs {expected}");
    let table = b.text("#map-points").await?;
    ensure!(
        table.contains(XSS_NAME) && table.contains(XSS_ATTR),
        "{table}"
    );
    no_injection(&b).await?;
    b.screenshot("bureau-map").await?;

    // The feed: a new exceedance appears without a reload; another county's does not.
    b.goto(&format!("{}/console/feed", s.base)).await?;
    b.wait_css("#live[data-polled]").await?;
    s.p.publish(vec![
        sample(
            "st02",
            "ui-other",
            "441702-T-0001",
            &now_minus(3),
            &[("Cd", 5.0)],
        ),
        sample(
            "st01",
            "ui-1",
            "441781-T-0001",
            &now_minus(2),
            &[("Cd", 0.9)],
        ),
    ])
    .await?;
    let row = b
        .wait_css("tr.feed-row[data-point='441781-T-0001']")
        .await?;
    ensure!(
        b.all("tr.feed-row[data-point='441702-T-0001']")
            .await?
            .is_empty(),
        "another county's alert in the feed"
    );
    let incident = row.attr("data-incident").await?.unwrap_or_default();
    ensure!(!incident.is_empty(), "feed row without incident");
    b.screenshot("bureau-feed").await?;

    // The incident page: chart, then acknowledge, a markup note, close with a reason.
    b.wait_css("tr.feed-row a").await?.click().await?;
    b.wait_css("#chart[data-samples]").await?;
    for (i, (action, detail)) in [
        ("acknowledge", ""),
        ("note", XSS_NOTE),
        ("close", "remediated: topsoil replaced"),
    ]
    .iter()
    .enumerate()
    {
        b.wait_css("#action").await?.select_by_value(action).await?;
        b.wait_css("#detail").await?.send_keys(detail).await?;
        b.wait_css("#act").await?.click().await?;
        wait_until("action row", Duration::from_secs(20), || async {
            Ok(b.all("tr.action-row").await?.len() == i + 1)
        })
        .await?;
    }
    let note = b.text("tr.action-row[data-action='note'] .detail").await?;
    ensure!(note == XSS_NOTE, "note shown as {note:?}");
    no_injection(&b).await?;
    ensure!(b.text("#workflow-stage").await? == "关闭");
    b.wait_css("#chart[data-samples]").await?;
    b.screenshot("incident").await?;

    // A form post of the session without (or with a wrong) CSRF token is refused.
    let cookie = b.cookie("soilmon_session").await?;
    let http = reqwest::Client::new();
    for body in [
        "action=note&detail=forged",
        "action=note&detail=forged&csrf=nope",
    ] {
        let r = http
            .post(format!("{}/console/incidents/{incident}/actions", s.base))
            .header("cookie", format!("soilmon_session={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await?;
        ensure!(r.status() == 403, "forged post answered {}", r.status());
    }

    // Archive, verify, MQTT.
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM archive WHERE kind = 'incident_action' AND ref = $1",
            &[&incident],
        )
        .await?
        .get(0);
    ensure!(n == 3, "{n} incident_action archive entries");
    let out = s.p.soilmon.command(&["verify"]).await?;
    ensure!(
        out.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("3 actions on MQTT", Duration::from_secs(20), || async {
        let got = actions_sub.received();
        Ok(got.iter().filter(|(t, _)| t.ends_with("/action")).count() == 3)
    })
    .await?;

    // Scope: another county's point is the same 404 as a missing one; admin pages are 403.
    b.goto(&format!("{}/console/points/441702-T-0001", s.base))
        .await?;
    let other = b.text("#error").await?;
    b.goto(&format!("{}/console/points/441781-X-9999", s.base))
        .await?;
    let missing = b.text("#error").await?;
    ensure!(
        other == missing && other.contains("404"),
        "{other} / {missing}"
    );
    b.goto(&format!("{}/console/admin/points", s.base)).await?;
    ensure!(b.text("#error").await?.contains("403"));
    b.screenshot("bureau-admin-403").await?;
    let status = http
        .get(format!(
            "{}/console/data/points/441702-T-0001/latest",
            s.base
        ))
        .header("cookie", format!("soilmon_session={cookie}"))
        .send()
        .await?
        .status();
    ensure!(status == 404, "data of another county: {status}");

    // Logout ends the session.
    b.goto(&format!("{}/console/map", s.base)).await?;
    b.wait_css("#logout").await?.click().await?;
    b.wait_css("#token").await?;
    let after = http
        .get(format!("{}/console/data/map", s.base))
        .header("cookie", format!("soilmon_session={cookie}"))
        .send()
        .await?;
    ensure!(
        after.url().path() == "/console/login",
        "session alive after logout"
    );
    b.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_uploads_a_good_and_a_bad_file() -> Result<()> {
    let s = start(&[]).await?;
    let b = Browser::start().await?;
    b.sign_in(&s.base, s.token(LAB)).await?;
    b.goto(&format!("{}/console/lab", s.base)).await?;
    // The shipped example as xlsx (typed cells: numbers, booleans, dates) is accepted.
    let example_xlsx = repo_path("config/lab/example-batch.xlsx");
    b.wait_css("#file")
        .await?
        .send_keys(&example_xlsx.to_string_lossy())
        .await?;
    let verdict = b.wait_css("#verdict[data-status]").await?;
    ensure!(
        verdict.attr("data-status").await?.as_deref() == Some("201"),
        "example xlsx: {}",
        b.text("#report").await?
    );
    ensure!(
        !b.all("#verdict.st-accepted").await?.is_empty(),
        "verdict {}",
        b.text("#verdict").await?
    );
    b.screenshot("lab-accepted").await?;
    // The same batch as CSV: the same content hash, so the original report comes back (200)
    // and nothing is stored twice.
    let example = repo_path("config/lab/example-batch.csv");
    b.wait_css("#file")
        .await?
        .send_keys(&example.to_string_lossy())
        .await?;
    wait_until(
        "the CSV answered as a replay",
        Duration::from_secs(20),
        || async { Ok(!b.all("#verdict[data-status='200']").await?.is_empty()) },
    )
    .await
    .with_context(|| "the example CSV after its xlsx")?;
    let batches: i64 =
        s.p.db()
            .await?
            .query_one(
                "SELECT count(*) FROM lab_batches WHERE batch_id = 'YJ-LAB01-2026-1120'",
                &[],
            )
            .await?
            .get(0);
    ensure!(batches == 1, "{batches} batches stored");

    // A bad file: an unknown point and a negative value, with their lines.
    let good = std::fs::read_to_string(&example)?;
    let bad: String = good
        .replace("YJ-LAB01-2026-1120", "YJ-LAB01-BAD-1")
        .replacen("441781-B-0001", "441781-B-0999", 1)
        .replacen(",42,", ",-42,", 1);
    let bad_file = s.dir.path().join("bad-batch.csv");
    std::fs::write(&bad_file, bad)?;
    b.wait_css("#file")
        .await?
        .send_keys(&bad_file.to_string_lossy())
        .await?;
    wait_until("rejected report", Duration::from_secs(20), || async {
        let v = b.all("#verdict[data-status='422']").await?;
        Ok(!v.is_empty())
    })
    .await?;
    let rows = b.all("tr.error-row").await?;
    let mut seen = Vec::new();
    for r in &rows {
        seen.push(r.text().await?);
    }
    ensure!(
        seen.iter()
            .any(|t| t.starts_with("2 ") && t.contains("unknown_point")),
        "{seen:?}"
    );
    ensure!(
        seen.iter()
            .any(|t| t.starts_with("3 ") && t.contains("negative_value")),
        "{seen:?}"
    );
    b.wait_css("#code-filter")
        .await?
        .select_by_value("negative_value")
        .await?;
    let filtered = b.all("tr.error-row").await?;
    ensure!(filtered.len() == 1, "filter left {} rows", filtered.len());
    b.screenshot("lab-rejected").await?;
    b.wait_css("#errors-csv").await?.click().await?;
    let csv = b.download("YJ-LAB01-BAD-1-errors.csv").await?;
    let text = String::from_utf8(csv)?;
    ensure!(
        text.starts_with('\u{feff}') && text.contains("3,value,negative_value"),
        "{text}"
    );

    // The history shows the accepted batch. The page is loaded afresh on each try: once, in a
    // full suite, the history read right after the navigation did not have it (the browser was
    // perhaps still busy with the download above).
    let lab_page = format!("{}/console/lab", s.base);
    wait_until(
        "the history shows the accepted batch",
        Duration::from_secs(20),
        || async {
            b.goto(&lab_page).await?;
            Ok(b.text("#history").await?.contains("YJ-LAB01-2026-1120"))
        },
    )
    .await?;

    // A session upload without the CSRF header is refused and stores nothing.
    let cookie = b.cookie("soilmon_session").await?;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/lab/batches", s.base))
        .header("cookie", format!("soilmon_session={cookie}"))
        .header("content-type", "text/csv")
        .body(good.replace("YJ-LAB01-2026-1120", "YJ-LAB01-CSRF"))
        .send()
        .await?;
    ensure!(r.status() == 403, "upload without CSRF: {}", r.status());
    let n: i64 =
        s.p.db()
            .await?
            .query_one(
                "SELECT count(*) FROM lab_batches WHERE batch_id = 'YJ-LAB01-CSRF'",
                &[],
            )
            .await?
            .get(0);
    ensure!(n == 0);
    b.close().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_page_downloads_and_admin_list() -> Result<()> {
    let s = start(&[("SOILMON__CONSOLE__PUBLIC__COORDINATE_DECIMALS", "3")]).await?;
    let batch = std::fs::read_to_string(repo_path("config/lab/example-batch.csv"))?;
    let up = s
        .request("POST", "/v1/lab/batches", Some(s.token(LAB)), Some(&batch))
        .await?;
    ensure!(up.status == 201, "lab upload {}: {}", up.status, up.text);
    // The public page reads the tier snapshot, which `soilmon run` refreshes every second in
    // tests: load the page once the snapshot holds the upload's samples, not before.
    let db = s.p.db().await?;
    let snapshot_has_upload = "SELECT count(*) > 0 FROM point_soil_tiers_snapshot t
        JOIN points p USING (point_id)
        WHERE p.county_code = '441781' AND p.point_type = 'basic' AND t.latest_sample IS NOT NULL";
    wait_until(
        "the tier snapshot has the upload",
        Duration::from_secs(30),
        || async {
            Ok(db
                .query_one(snapshot_has_upload, &[])
                .await?
                .get::<_, bool>(0))
        },
    )
    .await?;
    let b = Browser::start().await?;

    b.goto(&format!("{}/public/441781", s.base)).await?;
    let basic = b.text("td[data-type='basic']").await?;
    let want: i64 = db
        .query_one(
            "SELECT count(*) FROM points WHERE county_code = '441781' AND point_type = 'basic'",
            &[],
        )
        .await?
        .get(0);
    ensure!(basic == want.to_string(), "basic {basic} vs {want}");
    ensure!(
        b.all("td[data-type='risk']").await?.is_empty(),
        "risk points are not public"
    );
    ensure!(!b.text("#caveat").await?.is_empty());
    ensure!(b.text("#data-date").await? != "—");
    b.screenshot("public-441781").await?;

    for id in ["#dl-csv", "#dl-xlsx", "#dl-geojson"] {
        b.wait_css(id).await?.click().await?;
    }
    let csv = String::from_utf8(b.download("soil-points-441781.csv").await?)?;
    ensure!(csv.starts_with('\u{feff}'), "no BOM");
    let mut lines = csv.trim_start_matches('\u{feff}').lines();
    ensure!(
        lines.next()
            == Some(
                "point_id,name,county_code,point_type,land_use,lon,lat,soil_tier,latest_sample"
            )
    );
    ensure!(!csv.contains("-R-"), "a risk point was published");
    ensure!(
        csv.contains("441781-B-0901") && csv.contains(",111.761,22.164,"),
        "{csv}"
    );
    ensure!(csv.contains("441781-B-0001"), "{csv}");
    let geo_bytes = b.download("soil-points-441781.geojson").await?;
    let geo: Value = serde_json::from_slice(&geo_bytes)?;
    ensure!(geo["type"] == "FeatureCollection");
    let features = geo["features"].as_array().context("features")?;
    ensure!(features.len() as i64 == csv.lines().count() as i64 - 1);
    for f in features {
        for x in f["geometry"]["coordinates"].as_array().context("coords")? {
            let x = x.as_f64().context("number")?;
            ensure!(
                ((x * 1000.0).round() - x * 1000.0).abs() < 1e-6,
                "precision {x}"
            );
        }
    }
    let xlsx = b.download("soil-points-441781.xlsx").await?;
    ensure!(xlsx.starts_with(b"PK"), "xlsx is not a zip");

    // English is one click away.
    b.wait_css("#lang-switch").await?.click().await?;
    wait_until("English", Duration::from_secs(10), || async {
        Ok(b.text("#public-title")
            .await?
            .contains("Soil environmental quality"))
    })
    .await?;

    // The admin points list shows markup names as text.
    b.sign_in(&s.base, s.token(ADMIN)).await?;
    b.goto(&format!("{}/console/admin/points?q=0901", s.base))
        .await?;
    let name = b.text("#points td.name").await?;
    ensure!(name == XSS_ATTR, "{name}");
    no_injection(&b).await?;
    b.screenshot("admin-points").await?;
    b.goto(&format!("{}/console/admin/access", s.base)).await?;
    ensure!(b.text("#tokens").await?.contains("bureau-441781"));
    b.close().await
}

/// The point of the quarantined message, registered only when the admin imports it.
const LATE_POINT: &str = "441781-T-0009";

/// Ticks entry `id` on the quarantine page, replays it, and returns the outcome shown.
async fn replay_in_page(b: &Browser, base: &str, id: i64) -> Result<String> {
    b.goto(&format!("{base}/console/admin/quarantine")).await?;
    b.wait_css(&format!("#pick-{id}")).await?.click().await?;
    b.wait_css("#replay").await?.click().await?;
    let row = b
        .wait_css(&format!("tr.replay-result[data-id='{id}']"))
        .await?;
    Ok(row.attr("data-outcome").await?.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_replays_an_unknown_point_message_after_importing_the_point() -> Result<()> {
    let s = start(&[]).await?;
    // A station message naming a point not registered yet, with markup in a field.
    let (topic, payload) = sample(
        "st09",
        "late-1",
        LATE_POINT,
        "2026-11-28T09:30:00+08:00",
        &[("Cd", 0.45), ("Pb", 20.0)],
    );
    let mut v: Value = serde_json::from_slice(&payload)?;
    v["note"] = Value::from(XSS_NOTE);
    s.p.publish(vec![(topic, v.to_string().into_bytes())])
        .await?;
    s.p.wait_count(
        "SELECT count(*) FROM quarantine",
        1,
        Duration::from_secs(30),
    )
    .await?;
    let id: i64 =
        s.p.db()
            .await?
            .query_one("SELECT id FROM quarantine", &[])
            .await?
            .get(0);

    let b = Browser::start().await?;
    b.sign_in(&s.base, s.token(ADMIN)).await?;
    // Listed by reason; another reason's filter hides it.
    b.goto(&format!(
        "{}/console/admin/quarantine?reason=unknown_point&station=st09",
        s.base
    ))
    .await?;
    let row = b.wait_css(&format!("tr.entry[data-id='{id}']")).await?;
    ensure!(row.attr("data-status").await?.as_deref() == Some("quarantined"));
    ensure!(b.text("td.msg-id").await? == "late-1");
    b.screenshot("admin-quarantine").await?;
    b.goto(&format!(
        "{}/console/admin/quarantine?reason=bad_type",
        s.base
    ))
    .await?;
    b.wait_css("#quarantine").await?;
    ensure!(b.all("tr.entry").await?.is_empty(), "reason filter");
    // The payload is shown as text: the markup is visible, nothing ran.
    b.goto(&format!("{}/console/admin/quarantine/{id}", s.base))
        .await?;
    let shown = b.text("#payload").await?;
    ensure!(shown.contains("onerror=window.__xss=3"), "{shown}");
    no_injection(&b).await?;

    // Replayed while the point is missing: still refused with its reason.
    ensure!(replay_in_page(&b, &s.base, id).await? == "refused");

    // The point imported from the registry page: a bad file first shows every bad line.
    let header = "point_id,name,county_code,lon,lat,point_type,land_use,ph\n";
    let bad = s.dir.path().join("bad-points.csv");
    std::fs::write(
        &bad,
        format!(
            "{header}{LATE_POINT},Late,999999,111.81,22.20,risk,paddy,6.2\n\
             441781-T-0010,Late 2,441781,111.81,22.20,risk,moon,6.2\n"
        ),
    )?;
    b.goto(&format!("{}/console/admin/points", s.base)).await?;
    b.wait_css("#points-file")
        .await?
        .send_keys(&bad.to_string_lossy())
        .await?;
    b.wait_css("#import-result[data-status='422']").await?;
    let mut lines = Vec::new();
    for r in b.all("tr.import-error").await? {
        lines.push(r.text().await?);
    }
    ensure!(
        lines.len() == 2
            && lines[0].starts_with("2 county_code")
            && lines[1].starts_with("3 land_use"),
        "{lines:?}"
    );
    b.screenshot("admin-points-import").await?;
    let good = s.dir.path().join("points.csv");
    std::fs::write(
        &good,
        format!("{header}{LATE_POINT},Late paddy,441781,111.81,22.20,risk,paddy,6.2\n"),
    )?;
    b.wait_css("#points-file")
        .await?
        .send_keys(&good.to_string_lossy())
        .await?;
    b.wait_css("#import-result[data-status='200']").await?;

    // Replayed now: stored once. Twice more: nothing changes.
    ensure!(replay_in_page(&b, &s.base, id).await? == "stored");
    b.screenshot("admin-quarantine-replayed").await?;
    let readings = "SELECT count(*) FROM readings";
    ensure!(s.p.count(readings).await? == 2);
    for _ in 0..2 {
        ensure!(replay_in_page(&b, &s.base, id).await? == "already_stored");
        ensure!(s.p.count(readings).await? == 2);
    }
    ensure!(
        s.p.count("SELECT count(*) FROM archive WHERE kind = 'station_message'")
            .await?
            == 1
    );
    let by: Vec<String> =
        s.p.db()
            .await?
            .query(
                "SELECT replayed_by || ' ' || outcome FROM quarantine_replays ORDER BY id",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    let who = format!("console:{ADMIN}");
    ensure!(
        by == vec![
            format!("{who} refused"),
            format!("{who} stored"),
            format!("{who} already_stored"),
            format!("{who} already_stored"),
        ],
        "{by:?}"
    );
    b.goto(&format!("{}/console/admin/quarantine/{id}", s.base))
        .await?;
    ensure!(
        !b.all("#entry-status.st-resolved").await?.is_empty(),
        "the entry shows as resolved"
    );
    ensure!(
        b.all("tr.entry").await?.is_empty() && b.all("#replays tbody tr").await?.len() == 4,
        "four replays listed"
    );
    b.close().await
}

/// The subscriptions page of one row, freshly loaded.
async fn subscriptions_page(b: &Browser, base: &str) -> Result<()> {
    b.goto(&format!("{base}/console/subscriptions")).await?;
    b.wait_css("#subscriptions").await?;
    Ok(())
}

/// Fills the add form: a webhook of `bureau` to `url`, ticking `ticks` (checkbox ids).
async fn fill_webhook(
    b: &Browser,
    name: &str,
    bureau: &str,
    url: &str,
    ticks: &[&str],
) -> Result<()> {
    b.wait_css("#f-name").await?.send_keys(name).await?;
    b.wait_css("#f-bureau")
        .await?
        .select_by_value(bureau)
        .await?;
    b.wait_css("#f-channel")
        .await?
        .select_by_value("webhook")
        .await?;
    b.wait_css("#f-url").await?.send_keys(url).await?;
    for t in ticks {
        b.wait_css(t).await?.click().await?;
    }
    b.wait_css("#add").await?.click().await?;
    b.wait_css("#flash").await?;
    Ok(())
}

/// The `data-*` attribute of subscription `name`'s row on a fresh page.
async fn sub_attr(b: &Browser, base: &str, name: &str, attr: &str) -> Result<String> {
    subscriptions_page(b, base).await?;
    let row = b.wait_css(&format!("tr.sub[data-name='{name}']")).await?;
    Ok(row.attr(attr).await?.unwrap_or_default())
}

/// An admin manages an alert subscription in the console, against a real webhook receiver:
/// a county outside the bureau's scope is refused with the reason (nothing stored); the
/// webhook is added through the form (its generated key shown once, then never again), a
/// test goes through the real channel and the receiver's answer is shown; paused, an alert
/// queues (depth and age shown) and reaches nobody; resumed, the receiver fails it and it
/// is dead-lettered with the reason; the retry button delivers it again (the receiver
/// records the same event id); forms without the CSRF token are refused; a bureau user sees
/// and manages none of another bureau's subscriptions; remove cancels and forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_manages_a_webhook_subscription() -> Result<()> {
    use common::receiver::{Receiver, Reply};
    let dir = tempfile::tempdir()?;
    let path = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (secrets, pw, acl) = (path("secrets"), path("passwd"), path("acl"));
    let s = start(&[
        ("SOILMON__DELIVER__SECRETS_FILE", &secrets),
        ("SOILMON__BROKER__PASSWORD_FILE", &pw),
        ("SOILMON__BROKER__ACL_FILE", &acl),
        ("SOILMON__DELIVER__MAX_ATTEMPTS", "1"),
        ("SOILMON__DELIVER__REFRESH_SECS", "1"),
        ("SOILMON__DELIVER__POLL_MS", "50"),
        ("SOILMON__DELIVER__TIMEOUT_MS", "2000"),
        ("SOILMON__DELIVER__LEASE_SECS", "4"),
    ])
    .await?;
    let out =
        s.p.soilmon
            .command(&["bureaus", "add", "yangchun-epb", "--county", "441781"])
            .await?;
    ensure!(
        out.status.success(),
        "bureaus add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = Receiver::start()?;
    let hook = r.url("/hook");
    let b = Browser::start().await?;
    b.sign_in(&s.base, s.token(ADMIN)).await?;
    b.wait_css("#nav-subscriptions").await?.click().await?;
    b.wait_css("#add-form").await?;

    // A county outside the bureau's scope: refused with the reason, nothing stored.
    fill_webhook(&b, "yc-wide", "yangchun-epb", &hook, &["#f-county-441702"]).await?;
    let error = b.text("#sub-error").await?;
    let reason = b.text("#sub-error-reason").await?;
    ensure!(
        error.contains("所选区县不在该局的辖区内")
            && reason.contains("county \"441702\" is outside the bureau's scope (441781)"),
        "{error} / {reason}"
    );
    b.screenshot("subscriptions-refused").await?;
    ensure!(
        s.p.count("SELECT count(*) FROM subscriptions").await? == 0,
        "a refused subscription was stored"
    );

    // Added through the form: the generated key is shown once.
    fill_webhook(
        &b,
        "yc-hook",
        "yangchun-epb",
        &hook,
        &["#f-county-441781", "#f-metal-Cd"],
    )
    .await?;
    ensure!(b.text("#sub-added").await?.contains("yc-hook"));
    let secret = b.text("#new-secret").await?;
    ensure!(secret.len() >= 40, "secret {secret:?}");
    ensure!(std::fs::read_to_string(&secrets)?.contains(&secret));
    ensure!(sub_attr(&b, &s.base, "yc-hook", "data-state").await? == "active");
    let html = b.js("return document.documentElement.outerHTML").await?;
    ensure!(
        !html.as_str().unwrap_or_default().contains(&secret),
        "the secret is shown again"
    );
    ensure!(b.text("tr.sub .filters").await? == "county 441781 · metal Cd");

    // A test message through the real channel: the receiver's answer is shown.
    b.wait_css("#test-yc-hook").await?.click().await?;
    let answer = b.wait_css("#test-answer").await?;
    ensure!(answer.attr("data-delivered").await?.as_deref() == Some("true"));
    let text = b.text("#test-answer-text").await?;
    ensure!(
        text.contains("HTTP 200") && text.contains(r#"{"errcode":0,"errmsg":"ok"}"#),
        "{text}"
    );
    b.screenshot("subscriptions-test").await?;
    let got = r
        .wait_for("/hook", 1, Duration::from_secs(10), |_| true)
        .await?;
    ensure!(got[0].json()["test"] == Value::Bool(true));
    ensure!(common::subs::verify(&got[0], &secret), "bad signature");

    // Paused: an alert queues and reaches nobody; depth and age are shown.
    b.wait_css("#pause-yc-hook").await?.click().await?;
    b.wait_css("#sub-done").await?;
    ensure!(sub_attr(&b, &s.base, "yc-hook", "data-state").await? == "paused");
    s.p.publish(vec![sample(
        "st01",
        "sub-1",
        "441781-T-0001",
        &now_minus(2),
        &[("Cd", 0.9)],
    )])
    .await?;
    wait_until("one pending delivery", Duration::from_secs(30), || async {
        Ok(sub_attr(&b, &s.base, "yc-hook", "data-pending").await? == "1")
    })
    .await?;
    ensure!(b.text("tr.sub .oldest").await?.ends_with(" s"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(r.got("/hook").len() == 1, "a paused subscription delivered");

    // Resumed: the receiver fails it once, so (max_attempts 1) it is dead-lettered.
    r.script("/hook", &[Reply::Status(500)]);
    subscriptions_page(&b, &s.base).await?;
    b.wait_css("#resume-yc-hook").await?.click().await?;
    b.wait_css("#sub-done").await?;
    let failed = r
        .wait_for("/hook", 2, Duration::from_secs(30), |_| true)
        .await?;
    let event = failed[1].json()["event_id"].clone();
    wait_until("a dead letter", Duration::from_secs(30), || async {
        subscriptions_page(&b, &s.base).await?;
        Ok(!b.all("tr.dead").await?.is_empty())
    })
    .await?;
    let reason = b.text("tr.dead .reason").await?;
    ensure!(reason.starts_with("HTTP 500"), "{reason}");
    ensure!(b.text("tr.sub .last-error").await?.starts_with("HTTP 500"));
    ensure!(sub_attr(&b, &s.base, "yc-hook", "data-dead").await? == "1");
    b.screenshot("subscriptions-dead-letter").await?;

    // Retried from the page: delivered, the receiver records the same event again.
    let id = b
        .wait_css("tr.dead")
        .await?
        .attr("data-id")
        .await?
        .unwrap_or_default();
    b.wait_css(&format!("#retry-{id}")).await?.click().await?;
    ensure!(b.text("#retried").await?.ends_with('1'));
    let again = r
        .wait_for("/hook", 3, Duration::from_secs(30), |_| true)
        .await?;
    ensure!(
        again[2].json()["event_id"] == event,
        "another event was retried"
    );
    ensure!(common::subs::verify(&again[2], &secret));
    wait_until("delivered", Duration::from_secs(30), || async {
        Ok(s.p
            .count("SELECT count(*) FROM deliveries WHERE state = 'delivered'")
            .await?
            == 1)
    })
    .await?;
    subscriptions_page(&b, &s.base).await?;
    ensure!(
        b.all("tr.dead").await?.is_empty(),
        "the dead letter is still listed"
    );
    b.screenshot("subscriptions").await?;

    // Forms of the session without the CSRF token are refused.
    let cookie = b.cookie("soilmon_session").await?;
    let http = reqwest::Client::new();
    for (path, body) in [
        ("/console/subscriptions/yc-hook/pause", "csrf=nope"),
        (
            "/console/subscriptions",
            "name=forged&bureau=yangchun-epb&channel=webhook&url=http://127.0.0.1:1/x",
        ),
        ("/console/deliveries/retry", &format!("ids={id}") as &str),
    ] {
        let a = http
            .post(format!("{}{path}", s.base))
            .header("cookie", format!("soilmon_session={cookie}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_string())
            .send()
            .await?;
        ensure!(a.status() == 403, "{path} without CSRF: {}", a.status());
    }
    ensure!(sub_attr(&b, &s.base, "yc-hook", "data-state").await? == "active");

    // A bureau user (token bureau-441781) manages its own bureau's only: none of these.
    let bureau = Some(s.token(BUREAU_YC));
    let listed = s.get("/v1/subscriptions", bureau).await?;
    ensure!(listed.json()["count"] == 0, "{}", listed.text);
    let page = s.get("/console/subscriptions", bureau).await?;
    ensure!(
        page.status == 200 && !page.text.contains("yc-hook"),
        "{}",
        page.status
    );
    let pause = s
        .request("POST", "/v1/subscriptions/yc-hook/pause", bureau, Some(""))
        .await?;
    ensure!(pause.status == 404, "{}: {}", pause.status, pause.text);
    let admin = s.get("/v1/subscriptions", Some(s.token(ADMIN))).await?;
    ensure!(
        admin.json()["subscriptions"][0]["name"] == "yc-hook" && !admin.text.contains(&secret),
        "{}",
        admin.text
    );

    // Removed: gone from the page and from the secrets file.
    subscriptions_page(&b, &s.base).await?;
    b.wait_css("#confirm-yc-hook").await?.click().await?;
    b.wait_css("#remove-yc-hook").await?.click().await?;
    b.wait_css("#sub-done").await?;
    ensure!(b.all("tr.sub").await?.is_empty());
    ensure!(!std::fs::read_to_string(&secrets)?.contains("yc-hook"));
    b.close().await
}
