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
