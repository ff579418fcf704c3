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

/// The rows of one sheet of an xlsx workbook, every cell as text (numbers as Rust prints
/// them, empty cells as "").
fn xlsx_rows(book: &[u8], sheet: &str) -> anyhow::Result<Vec<Vec<String>>> {
    use calamine::{Data, Reader, Xlsx};
    let mut wb: Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(book.to_vec()))?;
    let range = wb.worksheet_range(sheet)?;
    Ok(range
        .rows()
        .map(|r| {
            r.iter()
                .map(|c| match c {
                    Data::String(s) => s.clone(),
                    Data::Float(f) => f.to_string(),
                    Data::Int(i) => i.to_string(),
                    Data::Bool(b) => b.to_string(),
                    Data::Empty => String::new(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect())
}

/// GET a path with the admin token; the status and the raw body.
async fn get_bytes(s: &LabService, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let resp = reqwest::Client::new()
        .get(format!("{}{path}", s.base))
        .bearer_auth(&s.viewer_token)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.bytes().await?.to_vec()))
}

/// Appends a token line (`role name [counties]`) to the service's tokens file and waits until
/// the service knows it (it answers `probe` with 200).
async fn add_token(s: &LabService, line: &str, probe: &str) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let token = format!("t-{}", common::random_suffix());
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let tokens = s.dir.path().join("tokens");
    let mut text = std::fs::read_to_string(&tokens)?;
    text.push_str(&format!("{hash} {line}\n"));
    std::fs::write(&tokens, text)?;
    common::wait_until("token loaded", WAIT, || async {
        Ok(s.get(probe, Some(&token)).await?.0 == 200)
    })
    .await?;
    Ok(token)
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

    // The same table as xlsx, from the CLI and from the API, read back.
    let file = s.dir.path().join("categories.xlsx");
    let out =
        s.p.soilmon
            .command(&["categories", "--xlsx", &file.to_string_lossy()])
            .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_cli = xlsx_rows(&std::fs::read(&file)?, "categories")?;
    assert_eq!(
        from_cli[0][..5],
        ["county_code", "point_id", "land_use", "campaign", "outcome"]
    );
    assert!(
        from_cli.iter().any(|r| r[..8]
            == [
                "441781",
                "441781-T-0001",
                "paddy",
                "2026",
                "safe_utilisation",
                "safe_utilisation",
                "exceeding",
                "true"
            ]),
        "{from_cli:?}"
    );
    let (st, book) = get_bytes(&s, "/v1/categories?format=xlsx").await?;
    assert_eq!(st, 200);
    assert_eq!(xlsx_rows(&book, "categories")?, from_cli);
    let counts = xlsx_rows(&book, "counts")?;
    assert!(
        counts.contains(&vec![
            "441781".into(),
            "safe_utilisation".into(),
            "1".into()
        ]),
        "{counts:?}"
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

    let token = add_token(&s, &format!("enterprise {code}"), "/v1/enterprise/readings").await?;

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

    // Ownership is decided first: a foreign point in a row that also fails the row checks
    // (a negative value) is 403, not 422.
    let foreign_and_bad = common::lab::batch_of(
        "E-3",
        &[
            "S4,441781-T-0001,2026-11-21 09:30,0,20,6.2,Cd,0.2,mg/kg,true,0.07,HJ 803,sample,",
            "S5,441702-T-0001,2026-11-21 09:30,0,20,7.0,Cd,-1,mg/kg,true,0.07,HJ 803,sample,",
            "S4-LD,,,,,,Cd,0.21,mg/kg,true,0.07,HJ 803,lab_duplicate,S4",
            "BLK3,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,",
        ],
    );
    let (st, body) = s
        .post(Some(&token), "text/csv", foreign_and_bad.into_bytes())
        .await?;
    assert_eq!(st, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("441702-T-0001"),
        "{body}"
    );
    assert_eq!(
        s.p.count("SELECT count(*) FROM lab_batches WHERE batch_id = 'E-3'")
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
    // Public disclosure (plan §28): the enterprise with its latest self-monitoring year, on
    // its county's page and in the download. A lab's exceeding result on its point is not
    // its self-monitoring.
    let lab = common::lab::batch_of(
        "L-1",
        &[
            "L1,441781-T-0001,2026-11-22 09:30,0,20,6.2,Cd,0.5,mg/kg,true,0.07,HJ 803,sample,",
            "L1-LD,,,,,,Cd,0.51,mg/kg,true,0.07,HJ 803,lab_duplicate,L1",
            "LBLK,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,",
        ],
    );
    let (st, report) = s.upload(&lab).await?;
    assert_eq!(st, 201, "{report}");
    let (st, page) = s.get("/public/441781", None).await?;
    assert_eq!(st, 200);
    assert!(
        page.contains(&format!("data-credit-code=\"{code}\"")) && page.contains("Renda"),
        "{page}"
    );
    assert!(page.contains("data-exceeded=\"false\""), "{page}");
    let (st, csv) = s.get("/public/city/enterprises.csv", None).await?;
    assert_eq!(st, 200, "{csv}");
    assert!(
        csv.contains(&format!(
            "{code},Renda lead-zinc mine,lead-zinc mining,441781,1,2026,1,false,none"
        )),
        "{csv}"
    );
    let (_, other) = s.get("/public/441702", None).await?;
    assert!(
        !other.contains(code),
        "another county's page does not list it"
    );

    Ok(())
}

/// Waits until the station message `msg_id` is stored.
async fn stored(s: &LabService, msg_id: &str) -> anyhow::Result<()> {
    let q = format!("SELECT count(*) FROM readings_full WHERE msg_id = '{msg_id}'");
    common::wait_until(msg_id, WAIT, || async { Ok(s.p.count(&q).await? > 0) }).await
}

/// One sample, its lab duplicate and a blank, for one metal.
fn one_sample_batch(batch: &str, id: &str, point: &str, at: &str, metal: &str, v: f64) -> String {
    let rows = [
        format!("{id},{point},{at},0,20,6.2,{metal},{v},mg/kg,true,0.07,HJ 803,sample,"),
        format!("{id}-LD,,,,,,{metal},{v},mg/kg,true,0.07,HJ 803,lab_duplicate,{id}"),
        format!("{id}-BLK,,,,,,{metal},0.01,mg/kg,true,0.07,HJ 803,blank,"),
    ];
    common::lab::batch_of(batch, &rows.each_ref().map(String::as_str))
}

/// Runs `soilmon ARGS`; the exit status and stdout + stderr.
async fn run(s: &LabService, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = s.p.soilmon.command(args).await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

const PLOTS_HEADER: &str = "plot_id,name,county_code,planned_use,status,points\n";

/// Development-land plots: bad files are refused whole with their line and reason code; the
/// land bureau's candidate list proposes from the plot's readings (lab first), scoped to the
/// caller's counties, and never changes a status; statuses change by hand only, one step
/// at a time, recorded with who and why.
#[tokio::test]
async fn plots_are_registered_and_candidates_proposed_never_applied() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let points = s.dir.path().join("more-points.csv");
    std::fs::write(
        &points,
        "point_id,name,county_code,lon,lat,point_type,land_use,ph\n\
         441702-T-0009,Jiangcheng depot,441702,111.96,21.87,basic,development_second,\n",
    )?;
    let (ok, text) = run(&s, &["points", "import", &points.to_string_lossy()]).await?;
    assert!(ok, "{text}");

    let file = s.dir.path().join("plots.csv");
    let path = file.to_string_lossy().into_owned();
    let good = "P1,Yangchun school site,441781,first,,441781-T-0002\n\
                P2,Jiangcheng depot,441702,second,investigated,441702-T-0009\n";
    let cases = [
        (
            good.replace("441702-T-0009", "441702-T-0404"),
            "line 3: points: unknown_point",
        ),
        (
            good.replacen("first", "third", 1),
            "line 2: planned_use: unknown_planned_use",
        ),
        (
            good.replace("investigated", "clean"),
            "line 3: status: bad_status",
        ),
        (
            good.replace("441781-T-0002", "441781-T-0001"),
            "line 2: points: planned_use_mismatch",
        ),
    ];
    for (body, code) in cases {
        std::fs::write(&file, format!("{PLOTS_HEADER}{body}"))?;
        let (ok, text) = run(&s, &["plots", "import", &path]).await?;
        assert!(!ok && text.contains(code), "{code}: {text}");
        assert_eq!(s.p.count("SELECT count(*) FROM plots").await?, 0, "{code}");
        assert_eq!(s.p.count("SELECT count(*) FROM plot_points").await?, 0);
    }
    std::fs::write(&file, format!("{PLOTS_HEADER}{good}"))?;
    let (ok, text) = run(&s, &["plots", "import", &path, "--by", "li"]).await?;
    assert!(ok, "{text}");
    assert_eq!(
        s.p.count("SELECT count(*) FROM plot_status_changes WHERE changed_by = 'li'")
            .await?,
        1,
        "P2's initial status is recorded"
    );

    // A lab Pb of 450 (first class screening 400) and a newer, clean field screening of the
    // same campaign: the lab result stands, P1 is a suspected-contaminated-site candidate.
    s.p.publish(vec![sample(
        "st01",
        "XRF-1",
        "441781-T-0002",
        "2026-06-01T00:00:00Z",
        &[("Pb", 100.0)],
    )])
    .await?;
    stored(&s, "XRF-1").await?;
    let batch = one_sample_batch(
        "PB-1",
        "PL1",
        "441781-T-0002",
        "2026-03-01 09:00",
        "Pb",
        450.0,
    );
    let (st, report) = s.upload(&batch).await?;
    assert_eq!(st, 201, "{report}");
    let (st, body) = s.get("/v1/plots/candidates", Some(&s.viewer_token)).await?;
    assert_eq!(st, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 1, "{body}");
    let c = &body["candidates"][0];
    assert_eq!(c["plot_id"], "P1");
    assert_eq!(c["candidate"], "suspected_contaminated", "{c}");
    assert_eq!(c["status"], Value::Null, "a proposal, not applied");
    assert_eq!(c["evidence"][0]["msg_id"], "PL1", "{c}");
    assert_eq!(c["evidence"][0]["source"], "lab");

    // County scope: a Jiangcheng bureau sees its plot, not Yangchun's candidate.
    let bureau = add_token(&s, "bureau b702 441702", "/v1/plots").await?;
    let (_, body) = s.get("/v1/plots", Some(&bureau)).await?;
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 1, "{body}");
    assert_eq!(body["plots"][0]["plot_id"], "P2");
    assert_eq!(body["plots"][0]["status"], "investigated");
    let (_, body) = s.get("/v1/plots/candidates", Some(&bureau)).await?;
    assert_eq!(serde_json::from_str::<Value>(&body)?["count"], 0, "{body}");

    // Status by hand only: a skipped step and an unknown plot are refused, nothing recorded.
    for (args, code) in [
        (
            ["plots", "status", "P1", "investigated"],
            "bad_status_transition",
        ),
        (["plots", "status", "P9", "suspected"], "unknown_plot"),
        (["plots", "status", "P1", "cleaned"], "bad_status"),
    ] {
        let mut all = args.to_vec();
        all.extend(["--by", "wang", "--reason", "survey 2026-17"]);
        let (ok, text) = run(&s, &all).await?;
        assert!(!ok && text.contains(code), "{code}: {text}");
    }
    assert_eq!(
        s.p.count("SELECT count(*) FROM plot_status_changes")
            .await?,
        1
    );
    let (ok, text) = run(
        &s,
        &[
            "plots",
            "status",
            "P1",
            "suspected",
            "--by",
            "wang",
            "--reason",
            "survey 2026-17",
        ],
    )
    .await?;
    assert!(ok, "{text}");
    let (_, body) = s.get("/v1/plots", Some(&s.viewer_token)).await?;
    let body: Value = serde_json::from_str(&body)?;
    let p1 = body["plots"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["plot_id"] == "P1"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(p1["status"], "suspected", "{p1}");
    assert_eq!(p1["history"][0]["by"], "wang");
    assert_eq!(p1["history"][0]["reason"], "survey 2026-17");
    assert_eq!(p1["history"][0]["from"], Value::Null);
    let (_, body) = s.get("/v1/plots/candidates", Some(&s.viewer_token)).await?;
    assert_eq!(serde_json::from_str::<Value>(&body)?["count"], 0, "{body}");

    // An import may not change a stored status.
    std::fs::write(
        &file,
        format!(
            "{PLOTS_HEADER}{}",
            good.replacen(",first,,", ",first,remediated,", 1)
        ),
    )?;
    let (ok, text) = run(&s, &["plots", "import", &path]).await?;
    assert!(!ok && text.contains("status_via_import"), "{text}");
    assert_eq!(
        s.p.count("SELECT count(*) FROM plots WHERE plot_id = 'P1' AND status = 'suspected'")
            .await?,
        1
    );

    // Above intervention (800): a risk-control candidate; the status stays as it was.
    let batch = one_sample_batch(
        "PB-2",
        "PL2",
        "441781-T-0002",
        "2026-07-01 09:00",
        "Pb",
        900.0,
    );
    let (st, report) = s.upload(&batch).await?;
    assert_eq!(st, 201, "{report}");
    let (ok, text) = run(&s, &["plots", "candidates"]).await?;
    assert!(ok, "{text}");
    assert!(
        text.contains("P1\tdevelopment_first\tnow suspected\tcandidate risk_control"),
        "{text}"
    );
    assert!(
        text.contains("441781-T-0002 Pb 900 mg/kg intervention"),
        "{text}"
    );
    assert_eq!(
        s.p.count("SELECT count(*) FROM plots WHERE plot_id = 'P1' AND status = 'suspected'")
            .await?,
        1
    );
    Ok(())
}

/// A late lab result outranks a newer field screening of the same campaign in the soil tier
/// (the view behind `soilmon tiers` and the public page) and in the category evidence; a
/// newer campaign's screening replaces it. Coverage does not list the city code as a county,
/// and its xlsx export reads back as the JSON says.
#[tokio::test]
async fn a_lab_result_outranks_a_newer_screening_of_its_campaign() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let point = "441781-T-0001";
    let tier = || async {
        let row =
            s.p.db()
                .await?
                .query_one(
                    "SELECT soil_tier FROM point_soil_tiers WHERE point_id = $1",
                    &[&point],
                )
                .await?;
        anyhow::Ok(row.get::<_, String>(0))
    };
    s.p.publish(vec![sample(
        "st01",
        "XRF-2025",
        point,
        "2025-06-01T00:00:00Z",
        &[("Cd", 0.1)],
    )])
    .await?;
    stored(&s, "XRF-2025").await?;
    assert_eq!(tier().await?, "priority_protection");
    // Paddy, pH 6.2: Cd screening 0.4.
    let batch = one_sample_batch("LATE-1", "LAB-CD", point, "2025-03-01 09:00", "Cd", 0.5);
    let (st, report) = s.upload(&batch).await?;
    assert_eq!(st, 201, "{report}");
    assert_eq!(tier().await?, "safe_utilisation", "the lab result stands");
    let (_, body) = s.get("/v1/categories", Some(&s.viewer_token)).await?;
    let report: Value = serde_json::from_str(&body)?;
    let p = point_of(&report, point);
    assert_eq!(p["current"]["result"]["soil"], "safe_utilisation", "{p}");
    assert_eq!(p["current"]["soil"][0]["msg_id"], "LAB-CD", "{p}");

    s.p.publish(vec![sample(
        "st01",
        "XRF-2026",
        point,
        "2026-02-01T00:00:00Z",
        &[("Cd", 0.1)],
    )])
    .await?;
    stored(&s, "XRF-2026").await?;
    assert_eq!(
        tier().await?,
        "priority_protection",
        "a newer campaign decides"
    );

    let (_, body) = s.get("/v1/coverage", Some(&s.viewer_token)).await?;
    let cov: Value = serde_json::from_str(&body)?;
    let codes: Vec<&str> = cov["counties"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["county_code"].as_str()).collect())
        .unwrap_or_default();
    assert!(!codes.is_empty() && !codes.contains(&"441700"), "{cov}");
    let file = s.dir.path().join("coverage.xlsx");
    let (ok, text) = run(&s, &["coverage", "--xlsx", &file.to_string_lossy()]).await?;
    assert!(ok, "{text}");
    let from_cli = std::fs::read(&file)?;
    let counties = xlsx_rows(&from_cli, "counties")?;
    let xlsx_codes: Vec<&str> = counties[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(xlsx_codes, codes);
    let cells = xlsx_rows(&from_cli, "coverage")?;
    assert!(
        cells
            .iter()
            .any(|r| r[..4] == ["441781", "risk", "paddy", "1"]),
        "{cells:?}"
    );
    let (st, from_api) = get_bytes(&s, "/v1/coverage?format=xlsx").await?;
    assert_eq!(st, 200);
    assert_eq!(xlsx_rows(&from_api, "coverage")?, cells);
    Ok(())
}
