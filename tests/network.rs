//! Network management on real services: monitoring obligations, the overdue check inside
//! `soilmon run`, coverage, and the refusal of bad obligation files and registry rows.
//!
//! The test points are `common::pipeline::TEST_POINTS`; with the shipped obligations file
//! `441781-T-0001` (Yangchun, risk, paddy) owes the eight priority metals every 365 days
//! (grain/oil county farmland) and the other test points owe nothing within a year of their
//! registration.

mod common;

use std::time::Duration;

use chrono::{Duration as Days, SecondsFormat, Utc};
use common::lab::LabService;
use common::pipeline::{json_of, sample};
use common::{repo_path, Soilmon, TestDb};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Several overdue checks at one per second: long enough to see a repeat if there were one.
const QUIET: Duration = Duration::from_secs(4);

/// RFC 3339 time `days` ago.
fn days_ago(days: i64) -> String {
    (Utc::now() - Days::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn states(got: &[(String, Vec<u8>)]) -> Vec<String> {
    got.iter()
        .map(|(_, b)| json_of(b)["state"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A point whose last Cd and Pb samples are 400 days old raises one `overdue` event on its
/// county's topic (not repeated at every check); a reminder comes only once its period has
/// passed; a new sample clears it with `overdue_cleared`. Coverage and the overdue list
/// follow.
#[tokio::test]
async fn an_overdue_point_is_raised_once_and_cleared_by_a_sample() -> anyhow::Result<()> {
    let s = LabService::start(&[("SOILMON__NETWORK__OVERDUE_CHECK_SECS", "1")]).await?;
    let alerts = s.p.subscribe("soil/v1/alerts/441781/#").await?;
    let point = "441781-T-0001";
    let old = sample(
        "st01",
        "old-1",
        point,
        &days_ago(400),
        &[("Cd", 0.1), ("Pb", 10.0)],
    );
    s.p.publish(vec![old]).await?;
    let got = alerts.wait_for(1, WAIT).await;
    assert_eq!(states(&got), ["overdue"], "log:\n{}", s.p.soilmon.log());
    assert_eq!(got[0].0, "soil/v1/alerts/441781/441781-T-0001/overdue");
    let event = json_of(&got[0].1);
    assert_eq!(event["county_code"], "441781");
    assert_eq!(event["reminder"], false);
    let metals: Vec<&str> = event["metals"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["metal"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(metals, ["Pb", "Cd"], "{event}");
    assert_eq!(event["metals"][0]["interval_days"], 365);
    assert_eq!(event["metals"][0]["program"], "grain_oil_farmland");
    assert_eq!(
        states(&alerts.wait_for(2, QUIET).await),
        ["overdue"],
        "not repeated at every check"
    );

    let (st, body) = s.get("/v1/overdue", Some(&s.viewer_token)).await?;
    assert_eq!(st, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["overdue"][0]["point_id"], point);

    // One period later (moved back in the database) the check reminds once.
    s.p.db()
        .await?
        .execute(
            "UPDATE overdue_points SET next_reminder_at = now() - interval '1 second'",
            &[],
        )
        .await?;
    let got = alerts.wait_for(2, WAIT).await;
    assert_eq!(states(&got), ["overdue", "overdue"]);
    assert_eq!(json_of(&got[1].1)["reminder"], true);
    assert_eq!(alerts.wait_for(3, QUIET).await.len(), 2);

    let fresh = sample(
        "st01",
        "new-1",
        point,
        &days_ago(1),
        &[("Cd", 0.1), ("Pb", 10.0)],
    );
    s.p.publish(vec![fresh]).await?;
    let got = alerts.wait_for(3, WAIT).await;
    assert_eq!(states(&got), ["overdue", "overdue", "overdue_cleared"]);
    assert_eq!(got[2].0, "soil/v1/alerts/441781/441781-T-0001/overdue");
    assert_eq!(alerts.wait_for(4, QUIET).await.len(), 3, "cleared once");
    assert_eq!(s.p.count("SELECT count(*) FROM overdue_points").await?, 0);

    // The events are alert events of the county: listed by /v1/alerts.
    let (_, body) = s.get("/v1/alerts", Some(&s.viewer_token)).await?;
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 3, "{body}");

    let (st, body) = s.get("/v1/coverage", Some(&s.viewer_token)).await?;
    assert_eq!(st, 200, "{body}");
    let cov: Value = serde_json::from_str(&body)?;
    let cell = cov["cells"]
        .as_array()
        .and_then(|cells| {
            cells
                .iter()
                .find(|c| c["county_code"] == "441781" && c["land_use"] == "paddy")
        })
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(cell["points"], 1, "{cov}");
    assert_eq!(cell["sampled_in_window"], 1, "{cov}");
    assert_eq!(cell["overdue"], 0, "{cov}");
    let orchard = cov["cells"]
        .as_array()
        .and_then(|cells| cells.iter().find(|c| c["land_use"] == "orchard"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(orchard["never_sampled"], 1, "{cov}");
    // The test registry has no background point anywhere, and Yangdong has no point at all.
    let yangdong = cov["counties"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["county_code"] == "441704"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        yangdong["missing_point_types"],
        serde_json::json!(["basic", "risk", "background"]),
        "{cov}"
    );
    let yangchun = cov["counties"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["county_code"] == "441781"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        yangchun["missing_point_types"],
        serde_json::json!(["background"])
    );
    assert_eq!(s.get("/v1/coverage", None).await?.0, 401);
    Ok(())
}

/// Writes `text` as an obligations file in `dir` and returns its path.
fn obligations_file(dir: &std::path::Path, name: &str, text: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path.to_string_lossy().into_owned())
}

/// An obligations file with an unknown program or a zero interval stops `check-config`,
/// `run` and `points import` with the reason code; a points file naming an unknown program
/// is refused whole (nothing stored).
#[tokio::test]
async fn bad_obligations_and_unknown_programs_are_refused() -> anyhow::Result<()> {
    let db = TestDb::create().await?;
    let dir = tempfile::tempdir()?;
    let shipped = std::fs::read_to_string(repo_path("config/obligations/yangjiang.toml"))?;
    let cases = [
        (
            "unknown.toml",
            shipped.replacen(
                "program = \"vegetable_base\"",
                "program = \"vegetable_bases\"",
                1,
            ),
            "unknown_program",
        ),
        (
            "zero.toml",
            shipped.replacen("interval_days = 365", "interval_days = 0", 1),
            "zero_interval",
        ),
    ];
    for (name, text, code) in cases {
        assert_ne!(text, shipped, "the case {name} changes the file");
        let path = obligations_file(dir.path(), name, &text)?;
        let soilmon = Soilmon::new(&db.url, 1).env("SOILMON__NETWORK__OBLIGATIONS_FILE", &path);
        for args in [&["check-config"][..], &["run"][..]] {
            let out = soilmon.command(args).await?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?} with {name} must fail");
            assert!(stderr.contains(code), "{args:?} {name}: {stderr}");
        }
    }

    let soilmon = Soilmon::new(&db.url, 1);
    let points = dir.path().join("points.csv");
    std::fs::write(
        &points,
        "point_id,name,county_code,lon,lat,point_type,land_use,ph,programs\n\
         441781-W-0001,Water source A,441781,111.80,22.20,basic,dry_land,6.0,drinking_water_source\n\
         441781-W-0002,Water source B,441781,111.81,22.21,basic,dry_land,6.0,spa_water\n",
    )?;
    let out = soilmon
        .command(&["points", "import", &points.to_string_lossy()])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("line 3: programs: unknown_program"),
        "{stderr}"
    );
    // The refusal comes before the database is touched: no point is stored.
    let client = db.client().await?;
    let stored = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'points'",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    if stored > 0 {
        let n: i64 = client
            .query_one("SELECT count(*) FROM points", &[])
            .await?
            .get(0);
        assert_eq!(n, 0);
    }

    std::fs::write(
        &points,
        "point_id,name,county_code,lon,lat,point_type,land_use,ph,programs\n\
         441781-W-0001,Water source A,441781,111.80,22.20,basic,dry_land,6.0,drinking_water_source\n",
    )?;
    let out = soilmon
        .command(&["points", "import", &points.to_string_lossy()])
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let programs: Vec<String> = client
        .query_one(
            "SELECT programs FROM points WHERE point_id = '441781-W-0001'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(programs, ["drinking_water_source"]);
    Ok(())
}

/// A lab batch with a `matrix` column: `header` + one CSV line per row, each prefixed with
/// the batch and lab ids.
fn crop_batch(batch: &str, rows: &[&str]) -> String {
    let mut out = format!("{},matrix\n", common::lab::HEADER);
    for r in rows {
        out.push_str(&format!("{batch},LAB1,{r}\n"));
    }
    out
}

fn point_of<'v>(report: &'v Value, id: &str) -> &'v Value {
    report["points"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["point_id"] == id))
        .unwrap_or(&Value::Null)
}

/// Crop samples in lab batches are judged against GB 2762 (never as soil readings) and,
/// with the soil tier, give the legal farmland category per campaign, with its evidence
/// and the history of changes; a point without crops shows its soil tier only. Unknown
/// matrices and crops without a farmland point are refused whole.
#[tokio::test]
async fn crop_samples_decide_the_farmland_category_with_history() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    // 2025: soil Cd 0.2 (paddy pH 6.2, screening 0.4: none) and rice Cd 0.1 (limit 0.2):
    // priority protection.
    let first = crop_batch(
        "C-2025",
        &[
            "S1,441781-T-0001,2025-10-01 09:00,0,20,6.2,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,,",
            "S1-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S1,",
            "R1,441781-T-0001,2025-10-01 09:00,,,,Cd,0.1,mg/kg,true,0.005,GB 5009.15,sample,,稻谷",
            "BLK1,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,,",
        ],
    );
    let (st, report) = s.upload(&first).await?;
    assert_eq!(st, 201, "{report}");
    // 2026: soil Cd 0.45 (safe utilisation) and rice Cd 0.3 (exceeding): safe utilisation;
    // dry land 441702-T-0001 has soil only.
    let second = crop_batch(
        "C-2026",
        &[
            "S2,441781-T-0001,2026-10-01 09:00,0,20,6.2,Cd,0.45,mg/kg,true,0.07,HJ 803,sample,,soil",
            "S2-LD,,,,,,Cd,0.46,mg/kg,true,0.07,HJ 803,lab_duplicate,S2,",
            "R2,441781-T-0001,2026-10-01 09:00,,,,Cd,0.3,mg/kg,true,0.005,GB 5009.15,sample,,rice",
            "R2,441781-T-0001,2026-10-01 09:00,,,,Pb,0.05,mg/kg,true,0.01,GB 5009.12,sample,,rice",
            "S3,441702-T-0001,2026-10-02 09:00,0,20,7.0,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,,",
            "BLK2,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,,",
        ],
    );
    let (st, report) = s.upload(&second).await?;
    assert_eq!(st, 201, "{report}");
    assert_eq!(
        s.p.count("SELECT count(*) FROM readings_full WHERE msg_id IN ('R1', 'R2')")
            .await?,
        0,
        "a crop is never a soil reading"
    );
    assert_eq!(s.p.count("SELECT count(*) FROM crop_results").await?, 3);
    assert_eq!(
        s.p.count(
            "SELECT count(*) FROM crop_results WHERE level = 'exceeding' AND limit_mgkg = 0.2"
        )
        .await?,
        1
    );

    let (st, body) = s.get("/v1/categories", Some(&s.viewer_token)).await?;
    assert_eq!(st, 200, "{body}");
    let report: Value = serde_json::from_str(&body)?;
    let paddy = point_of(&report, "441781-T-0001");
    assert_eq!(paddy["current"]["campaign"], "2026", "{paddy}");
    assert_eq!(paddy["current"]["result"]["kind"], "category");
    assert_eq!(paddy["current"]["result"]["category"], "safe_utilisation");
    assert_eq!(paddy["current"]["result"]["crop"], "exceeding");
    assert_eq!(paddy["current"]["changed"], true);
    assert_eq!(paddy["current"]["crops"].as_array().map(Vec::len), Some(2));
    assert_eq!(paddy["current"]["soil"][0]["msg_id"], "S2");
    assert_eq!(paddy["history"][0]["campaign"], "2025");
    assert_eq!(
        paddy["history"][0]["result"]["category"],
        "priority_protection"
    );
    let dry = point_of(&report, "441702-T-0001");
    assert_eq!(dry["current"]["result"]["kind"], "soil_tier_only", "{dry}");
    assert_eq!(dry["current"]["result"]["soil"], "priority_protection");
    assert!(dry["current"]["result"].get("category").is_none());
    let yangchun = report["counties"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["county_code"] == "441781"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(yangchun["counts"]["safe_utilisation"], 1, "{yangchun}");
    assert!(
        point_of(&report, "441781-T-0002").is_null(),
        "development land has no farmland category"
    );

    let (st, csv) = s
        .get("/v1/categories?format=csv", Some(&s.viewer_token))
        .await?;
    assert_eq!(st, 200);
    assert!(
        csv.starts_with("county_code,point_id,land_use,campaign,outcome"),
        "{csv}"
    );
    assert!(
        csv.contains(
            "441781,441781-T-0001,paddy,2026,safe_utilisation,safe_utilisation,exceeding,true"
        ),
        "{csv}"
    );
    assert!(
        csv.contains("441702,441702-T-0001,dry_land,2026,soil_tier_only:priority_protection"),
        "{csv}"
    );

    // Bad crop rows: an unknown matrix, a crop without a point, a crop on development land.
    let bad = crop_batch(
        "C-BAD",
        &[
            "S9,441781-T-0001,2026-10-01 09:00,0,20,6.2,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,,",
            "S9-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S9,",
            "R7,441781-T-0001,2026-10-01 09:00,,,,Cd,0.1,mg/kg,true,0.005,GB 5009.15,sample,,banana",
            "R8,,2026-10-01 09:00,,,,Cd,0.1,mg/kg,true,0.005,GB 5009.15,sample,,rice",
            "R9,441781-T-0002,2026-10-01 09:00,,,,Cd,0.1,mg/kg,true,0.005,GB 5009.15,sample,,wheat",
            "BLK9,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,,",
        ],
    );
    let (st, report) = s.upload(&bad).await?;
    assert_eq!(st, 422, "{report}");
    let found = common::lab::codes(&report);
    for (code, line) in [
        ("unknown_matrix", 4),
        ("crop_without_soil_point", 5),
        ("crop_without_soil_point", 6),
    ] {
        assert!(
            found.contains(&(code.to_string(), Some(line))),
            "{code} line {line}: {found:?}"
        );
    }
    assert_eq!(
        s.p.count("SELECT count(*) FROM lab_rows WHERE batch_id = 'C-BAD'")
            .await?,
        0
    );
    assert_eq!(s.p.count("SELECT count(*) FROM crop_results").await?, 3);
    Ok(())
}

/// A key supervised enterprise (credit code checked on import) uploads self-monitoring
/// batches for its own points; a batch naming another point is refused with 403 and nothing
/// is stored; it reads its own results and nothing else.
#[tokio::test]
async fn an_enterprise_uploads_for_its_own_points_only() -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let s = LabService::start(&[]).await?;
    let code = "91350100M000100Y43";
    let file = s.dir.path().join("enterprises.csv");
    let good = format!(
        "credit_code,name,industry,county_code,lon,lat,points\n\
         {code},Renda lead-zinc mine,lead-zinc mining,441781,111.586,22.364,441781-T-0001\n"
    );
    std::fs::write(&file, good.replace("Y43", "Y44"))?;
    let path = file.to_string_lossy().into_owned();
    let out =
        s.p.soilmon
            .command(&["enterprises", "import", &path])
            .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("bad_credit_check_digit"), "{stderr}");
    assert_eq!(s.p.count("SELECT count(*) FROM enterprises").await?, 0);
    std::fs::write(&file, &good)?;
    let out =
        s.p.soilmon
            .command(&["enterprises", "import", &path])
            .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let token = format!("ent-{}", common::random_suffix());
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let tokens = s.dir.path().join("tokens");
    let mut text = std::fs::read_to_string(&tokens)?;
    text.push_str(&format!("{hash} enterprise {code}\n"));
    std::fs::write(&tokens, text)?;
    common::wait_until("enterprise token loaded", WAIT, || async {
        Ok(s.get("/v1/enterprise/readings", Some(&token)).await?.0 == 200)
    })
    .await?;

    let own = common::lab::batch_of(
        "E-1",
        &[
            "S1,441781-T-0001,2026-11-20 09:30,0,20,6.2,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,",
            "S1-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S1",
            "BLK1,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,",
        ],
    );
    let (st, report) = s.post(Some(&token), "text/csv", own.into_bytes()).await?;
    assert_eq!(st, 201, "{report}");
    let foreign = common::lab::batch_of(
        "E-2",
        &[
            "S2,441781-T-0001,2026-11-21 09:30,0,20,6.2,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,",
            "S3,441702-T-0001,2026-11-21 09:30,0,20,7.0,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,",
            "S2-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S2",
            "BLK2,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,",
        ],
    );
    let (st, body) = s
        .post(Some(&token), "text/csv", foreign.into_bytes())
        .await?;
    assert_eq!(st, 403, "{body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.starts_with("not_own_point") && error.contains("441702-T-0001"),
        "{body}"
    );
    assert!(
        !error.contains("441781-T-0001"),
        "only the foreign point is named"
    );
    assert_eq!(
        s.p.count("SELECT count(*) FROM lab_batches WHERE batch_id = 'E-2'")
            .await?,
        0
    );
    assert_eq!(
        s.p.count("SELECT count(*) FROM readings_full WHERE msg_id IN ('S2', 'S3')")
            .await?,
        0
    );

    let (st, body) = s.get("/v1/enterprise/readings", Some(&token)).await?;
    assert_eq!(st, 200);
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["readings"][0]["point_id"], "441781-T-0001");
    assert_eq!(s.get("/v1/alerts", Some(&token)).await?.0, 403);
    assert_eq!(
        s.get("/v1/enterprise/readings", Some(&s.lab_token))
            .await?
            .0,
        403
    );
    Ok(())
}
