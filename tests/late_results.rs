//! Late results on real services: a sample older than the newest one seen for its
//! (point, metal) changes no incident state, but an exceeding one is alerted once, as
//! `late_exceedance`, with both sample times. Points and thresholds are those of
//! `common::pipeline::TEST_POINTS` (441781-T-0001: paddy, pH 6.2 → Cd screening 0.4,
//! intervention 2.0 mg/kg; 441702-T-0001: dry land, pH 7.0 → Cd screening 0.3 mg/kg).

mod common;

use std::time::Duration;

use common::lab::{batch_of, LabService};
use common::pipeline::{json_of, sample, Pipeline};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// How long to wait for an alert that must not come.
const QUIET: Duration = Duration::from_secs(3);

/// A batch of one field sample `row` (its sample id `id`, Cd) with the QC rows the checks
/// require: a lab duplicate (of Cd `dup` mg/kg) and a blank.
fn one_sample_batch(batch: &str, id: &str, row: &str, dup: &str) -> String {
    let duplicate = format!("{id}-LD,,,,,,Cd,{dup},mg/kg,true,0.07,HJ 803,lab_duplicate,{id}");
    let blank = "BLK1,,,,,,Cd,0.01,mg/kg,true,0.07,HJ 803,blank,";
    batch_of(batch, &[row, &duplicate, blank])
}

/// The states of the alerts received so far.
fn states(got: &[(String, Vec<u8>)]) -> Vec<String> {
    got.iter()
        .map(|(_, b)| json_of(b)["state"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A lab Cd result above screening, sampled before a clean XRF screening of the same point
/// already stored, raises exactly one `late_exceedance` and opens nothing; replaying the
/// batch and redelivering the station message change nothing. The API lists it.
#[tokio::test]
async fn a_lab_result_older_than_a_clean_screening_is_alerted_once() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let alerts = s.p.subscribe("soil/v1/alerts/441781/#").await?;
    let point = "441781-T-0001";
    let station = sample(
        "st01",
        "x-1",
        point,
        "2026-11-25T08:00:00+08:00",
        &[("Cd", 0.1)],
    );
    s.p.publish(vec![station.clone()]).await?;
    s.p.wait_count("SELECT count(*) FROM samples WHERE msg_id = 'x-1'", 1, WAIT)
        .await?;

    let batch = one_sample_batch(
        "B-LATE",
        "S1",
        "S1,441781-T-0001,2026-11-20 09:30,0,20,6.2,Cd,0.45,mg/kg,true,0.07,HJ 803,sample,",
        "0.46",
    );
    let (status, report) = s.upload(&batch).await?;
    assert_eq!(status, 201, "{report}\n{}", s.p.soilmon.log());
    assert_eq!(report["alerts"], 1);

    let got = alerts.wait_for(1, WAIT).await;
    assert_eq!(
        states(&got),
        ["late_exceedance"],
        "log:\n{}",
        s.p.soilmon.log()
    );
    assert_eq!(got[0].0, "soil/v1/alerts/441781/441781-T-0001/Cd");
    let alert = json_of(&got[0].1);
    assert_eq!(alert["level"], "screening");
    assert_eq!(alert["reading_level"], "screening");
    assert_eq!(
        alert["incident_id"],
        Value::Null,
        "the pair has no open incident"
    );
    assert_eq!(alert["sampled_at"], "2026-11-20T01:30:00Z");
    assert_eq!(alert["newer_sampled_at"], "2026-11-25T00:00:00Z");
    assert_eq!(alert["source"], "lab");
    assert_eq!(alert["source_id"], "B-LATE");
    assert_eq!(alert["msg_id"], "S1");
    assert_eq!(alert["value_mgkg"], 0.45);
    assert_eq!(alert["screening_mgkg"], 0.4);
    assert_eq!(alert["standard"], "GB 15618-2018");
    assert_eq!(s.p.count("SELECT count(*) FROM incidents").await?, 0);
    assert_eq!(s.p.count("SELECT count(*) FROM incident_tracks").await?, 0);

    // The replayed batch and the redelivered message are absorbed before judging. A new
    // clean message after the redelivery shows the redelivery has been handled.
    let (status, report) = s.upload(&batch).await?;
    assert_eq!(status, 200, "replay: {report}");
    let later = sample(
        "st01",
        "x-2",
        point,
        "2026-11-26T08:00:00+08:00",
        &[("Cd", 0.1)],
    );
    s.p.publish(vec![station, later]).await?;
    s.p.wait_count("SELECT count(*) FROM samples WHERE msg_id = 'x-2'", 1, WAIT)
        .await?;
    assert_eq!(
        states(&alerts.wait_for(2, QUIET).await),
        ["late_exceedance"]
    );
    assert_eq!(
        s.p.count("SELECT count(*) FROM outbox WHERE kind = 'alert'")
            .await?,
        1
    );

    let (st, body) = s.get("/v1/alerts", Some(&s.viewer_token)).await?;
    assert_eq!(st, 200, "{body}");
    let body: Value = serde_json::from_str(&body)?;
    assert_eq!(body["count"], 1, "{body}");
    let listed = &body["alerts"][0];
    assert_eq!(listed["state"], "late_exceedance");
    assert_eq!(listed["sampled_at"], "2026-11-20T01:30:00Z");
    assert_eq!(listed["newer_sampled_at"], "2026-11-25T00:00:00Z");
    Ok(())
}

/// A late station sample at intervention level, older than the exceedance that opened the
/// pair's incident, is alerted as `late_exceedance` naming that incident; the incident keeps
/// its level, and a redelivery raises nothing more.
#[tokio::test]
async fn a_late_station_exceedance_names_the_open_incident() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let alerts = p.subscribe("soil/v1/alerts/441781/#").await?;
    let point = "441781-T-0001";
    let late = sample(
        "st01",
        "o-0",
        point,
        "2026-11-28T09:00:00+08:00",
        &[("Cd", 2.5)],
    );
    let first = sample(
        "st01",
        "o-1",
        point,
        "2026-11-28T10:00:00+08:00",
        &[("Cd", 0.5)],
    );
    for (id, msg) in [("o-1", first), ("o-0", late.clone())] {
        p.publish(vec![msg]).await?;
        let sql = format!("SELECT count(*) FROM samples WHERE msg_id = '{id}'");
        p.wait_count(&sql, 1, WAIT).await?;
    }
    let got = alerts.wait_for(2, WAIT).await;
    assert_eq!(
        states(&got),
        ["opened", "late_exceedance"],
        "log:\n{}",
        p.soilmon.log()
    );
    let (opened, late_alert) = (json_of(&got[0].1), json_of(&got[1].1));
    assert_eq!(late_alert["incident_id"], opened["incident_id"]);
    assert_eq!(late_alert["level"], "intervention");
    assert_eq!(late_alert["msg_id"], "o-0");
    assert_eq!(late_alert["station_id"], "st01");
    assert_eq!(late_alert["sampled_at"], "2026-11-28T01:00:00Z");
    assert_eq!(late_alert["newer_sampled_at"], "2026-11-28T02:00:00Z");
    assert_eq!(
        p.count("SELECT count(*) FROM incidents WHERE state = 'open' AND level = 'screening'")
            .await?,
        1,
        "the late sample does not escalate"
    );

    let next = sample(
        "st01",
        "o-2",
        point,
        "2026-11-28T11:00:00+08:00",
        &[("Cd", 0.5)],
    );
    p.publish(vec![late, next]).await?;
    p.wait_count("SELECT count(*) FROM samples WHERE msg_id = 'o-2'", 1, WAIT)
        .await?;
    assert_eq!(
        states(&alerts.wait_for(3, QUIET).await),
        ["opened", "late_exceedance"]
    );
    Ok(())
}

/// A lab result with the same `sampled_at` as the newest station screening of the pair is
/// not late: it is applied normally and opens the incident the screening did not.
#[tokio::test]
async fn a_lab_result_of_the_screening_time_is_applied_normally() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let alerts = s.p.subscribe("soil/v1/alerts/#").await?;
    let point = "441702-T-0001";
    let station = sample(
        "st02",
        "y-1",
        point,
        "2026-11-20T10:00:00+08:00",
        &[("Cd", 0.1)],
    );
    s.p.publish(vec![station]).await?;
    s.p.wait_count("SELECT count(*) FROM samples WHERE msg_id = 'y-1'", 1, WAIT)
        .await?;
    let batch = one_sample_batch(
        "B-SAME",
        "S2",
        "S2,441702-T-0001,2026-11-20 10:00,0,20,7.0,Cd,0.5,mg/kg,true,0.07,HJ 803,sample,",
        "0.46",
    );
    let (status, report) = s.upload(&batch).await?;
    assert_eq!(status, 201, "{report}\n{}", s.p.soilmon.log());
    let got = alerts.wait_for(1, WAIT).await;
    assert_eq!(states(&got), ["opened"], "log:\n{}", s.p.soilmon.log());
    assert_eq!(json_of(&got[0].1)["source"], "lab");
    assert_eq!(
        s.p.count("SELECT count(*) FROM incidents WHERE state = 'open'")
            .await?,
        1
    );
    Ok(())
}

/// The station writer keeps the incident tracks it committed in memory (schema 26, the
/// `incident_epoch`). A lab upload that escalates the incident between two station batches
/// must be seen by the next batch: an intervention-level station sample after it changes
/// nothing (the incident is at intervention already), and two clean samples clear it.
#[tokio::test]
async fn a_lab_upload_between_station_batches_is_seen_by_the_next_batch() -> anyhow::Result<()> {
    let s = LabService::start(&[]).await?;
    let alerts = s.p.subscribe("soil/v1/alerts/441781/#").await?;
    let point = "441781-T-0001";
    let at = |day: u32, id: &str, cd: f64| {
        let t = format!("2026-11-{day}T08:00:00+08:00");
        sample("st01", id, point, &t, &[("Cd", cd)])
    };
    s.p.publish(vec![at(20, "e-1", 0.5)]).await?;
    let got = alerts.wait_for(1, WAIT).await;
    assert_eq!(states(&got), ["opened"], "log:\n{}", s.p.soilmon.log());

    let batch = one_sample_batch(
        "B-ESC",
        "S3",
        "S3,441781-T-0001,2026-11-21 08:00,0,20,6.2,Cd,2.5,mg/kg,true,0.07,HJ 803,sample,",
        "2.52",
    );
    let (status, report) = s.upload(&batch).await?;
    assert_eq!(status, 201, "{report}\n{}", s.p.soilmon.log());
    assert_eq!(report["alerts"], 1, "{report}");

    for (day, id, cd) in [(22, "e-2", 2.6), (23, "e-3", 0.1), (24, "e-4", 0.1)] {
        s.p.publish(vec![at(day, id, cd)]).await?;
        let sql = format!("SELECT count(*) FROM samples WHERE msg_id = '{id}'");
        s.p.wait_count(&sql, 1, WAIT).await?;
    }
    let got = alerts.wait_for(4, QUIET).await;
    assert_eq!(
        states(&got),
        ["opened", "escalated", "cleared"],
        "log:\n{}",
        s.p.soilmon.log()
    );
    assert_eq!(
        s.p.count(
            "SELECT count(*) FROM incidents WHERE state = 'cleared' AND level = 'intervention'"
        )
        .await?,
        1
    );
    Ok(())
}
