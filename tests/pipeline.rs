//! End-to-end tests on real services: a per-test mosquitto, a fresh TimescaleDB database and
//! the `soilmon run` binary. Expected thresholds are read from GB 15618-2018 / GB 36600-2018
//! for the points in `common::pipeline::TEST_POINTS`.

mod common;

use std::time::Duration;

use common::pipeline::{json_of, sample, Pipeline};

const WAIT: Duration = Duration::from_secs(30);

/// A published sample becomes judged rows; an exceedance alerts the point's county only.
#[tokio::test]
async fn exceedance_is_stored_judged_and_alerted_to_its_county_only() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let own = p.subscribe("soil/v1/alerts/441781/#").await?;
    let other = p.subscribe("soil/v1/alerts/441702/#").await?;
    // Paddy, pH 6.2 (band 5.5<pH<=6.5): Cd screening 0.4, intervention 2.0; Pb screening 100.
    p.publish(vec![sample(
        "st01",
        "m-1",
        "441781-T-0001",
        "2026-11-28T09:30:00+08:00",
        &[("Cd", 0.45), ("Pb", 50.0), ("镍", 10.0)],
    )])
    .await?;
    let got = own.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "log:\n{}", p.soilmon.log());
    assert_eq!(got[0].0, "soil/v1/alerts/441781/441781-T-0001/Cd");
    let alert = json_of(&got[0].1);
    assert_eq!(alert["state"], "opened");
    assert_eq!(alert["level"], "screening");
    assert_eq!(alert["value_mgkg"], 0.45);
    assert_eq!(alert["screening_mgkg"], 0.4);
    assert_eq!(alert["intervention_mgkg"], 2.0);
    assert_eq!(alert["standard"], "GB 15618-2018");
    assert_eq!(alert["land_use"], "paddy");
    assert_eq!(alert["ph_band"], "5.5<pH<=6.5");
    assert_eq!(alert["ph_assumed"], false);
    assert_eq!(alert["msg_id"], "m-1");
    assert_eq!(alert["sampled_at"], "2026-11-28T01:30:00Z");
    assert!(alert["event_id"].is_string() && alert["incident_id"].is_string());

    let db = p.db().await?;
    let rows = db
        .query(
            "SELECT metal, level, value_mgkg, screening_mgkg, standard_id, ph, ph_assumed
             FROM readings_full ORDER BY metal",
            &[],
        )
        .await?;
    let levels: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        levels,
        vec![
            ("Cd".into(), "screening".into()),
            ("Ni".into(), "none".into()),
            ("Pb".into(), "none".into())
        ]
    );
    let ph: Option<f64> = rows[0].get(5);
    assert_eq!(ph, Some(6.2), "registered pH used when the sample has none");
    // The other county's subscriber saw nothing, even after the alert was delivered.
    assert!(other.wait_for(1, Duration::from_secs(2)).await.is_empty());
    let open: i64 = db
        .query_one("SELECT count(*) FROM incidents WHERE state = 'open'", &[])
        .await?
        .get(0);
    assert_eq!(open, 1);
    // The outbox keeps the text it published (schema 27), and finds the event by its
    // incident (the console's incident page).
    let incident_id = uuid::Uuid::parse_str(alert["incident_id"].as_str().unwrap_or_default())?;
    let stored = db
        .query(
            "SELECT payload::text FROM outbox WHERE kind = 'alert' AND incident_id = $1",
            &[&incident_id],
        )
        .await?;
    assert_eq!(
        stored.len(),
        1,
        "the incident's alert events by incident_id"
    );
    let text: String = stored[0].get(0);
    assert_eq!(text.as_bytes(), got[0].1.as_slice(), "published as stored");
    Ok(())
}

/// A later batch judged on the same bases takes their keys from the writer's cache
/// (`store::keys::KeyCache`) instead of the database: its readings must still point at the
/// bases they were judged on, exactly as the first batch's do.
#[tokio::test]
async fn a_later_batch_on_cached_keys_stores_the_same_provenance() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let metals = [("Cd", 0.45), ("Pb", 50.0), ("Hg", 0.1), ("As", 12.0)];
    for (i, at) in ["2026-11-28T09:30:00+08:00", "2026-11-29T09:30:00+08:00"]
        .iter()
        .enumerate()
    {
        p.publish(vec![sample(
            "st01",
            &format!("m-{i}"),
            "441781-T-0001",
            at,
            &metals,
        )])
        .await?;
        // Stored before the next is sent: two batches, the second on cached keys.
        p.wait_count(
            "SELECT count(*) FROM readings_full",
            4 * (i as i64 + 1),
            WAIT,
        )
        .await?;
    }
    let db = p.db().await?;
    let rows = db
        .query(
            "SELECT b.metal, b.basis_key = a.basis_key AND b.unit_orig = a.unit_orig,
                    b.standard_id, b.screening_mgkg, b.land_use, b.ph_band
             FROM readings_full a
             JOIN readings_full b ON b.metal = a.metal AND b.msg_id = 'm-1'
             WHERE a.msg_id = 'm-0' ORDER BY b.metal",
            &[],
        )
        .await?;
    type Provenance = (
        String,
        bool,
        Option<String>,
        Option<f64>,
        Option<String>,
        Option<String>,
    );
    let got: Vec<Provenance> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    // Paddy, pH 6.2 (band 5.5<pH<=6.5): GB 15618-2018 table 1, paddy column.
    let band = Some("5.5<pH<=6.5".to_string());
    let gb = Some("GB 15618-2018".to_string());
    let paddy = || Some("paddy".to_string());
    assert_eq!(
        got,
        vec![
            (
                "As".into(),
                true,
                gb.clone(),
                Some(30.0),
                paddy(),
                band.clone()
            ),
            (
                "Cd".into(),
                true,
                gb.clone(),
                Some(0.4),
                paddy(),
                band.clone()
            ),
            (
                "Hg".into(),
                true,
                gb.clone(),
                Some(0.5),
                paddy(),
                band.clone()
            ),
            ("Pb".into(), true, gb, Some(100.0), paddy(), band),
        ],
        "log:\n{}",
        p.soilmon.log()
    );
    Ok(())
}

/// The same message published twice is stored once and alerts once; the same msg_id with
/// different content is quarantined as a conflicting duplicate and the sender is told.
#[tokio::test]
async fn redelivery_is_stored_once_and_conflicts_are_quarantined() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let alerts = p.subscribe("soil/v1/alerts/#").await?;
    let rejects = p.subscribe("soil/v1/stations/st02/rejects").await?;
    let msg = sample(
        "st02",
        "dup-1",
        "441781-T-0001",
        "2026-11-28T10:00:00+08:00",
        &[("Cd", 3.0)],
    );
    p.publish(vec![msg.clone(), msg.clone()]).await?;
    p.publish(vec![msg.clone()]).await?;
    let changed = sample(
        "st02",
        "dup-1",
        "441781-T-0001",
        "2026-11-28T10:00:00+08:00",
        &[("Cd", 0.1)],
    );
    p.publish(vec![changed]).await?;
    let got = rejects.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1, "log:\n{}", p.soilmon.log());
    let reply = json_of(&got[0].1);
    assert_eq!(reply["reason"], "conflicting_duplicate");
    assert_eq!(reply["msg_id"], "dup-1");
    let alert = alerts.wait_for(1, WAIT).await;
    assert_eq!(json_of(&alert[0].1)["level"], "intervention");
    assert_eq!(p.count("SELECT count(*) FROM readings_full").await?, 1);
    assert_eq!(
        p.count("SELECT count(*) FROM outbox WHERE kind = 'alert'")
            .await?,
        1
    );
    let kept: f64 = p
        .db()
        .await?
        .query_one("SELECT value_mgkg FROM readings_full", &[])
        .await?
        .get(0);
    assert_eq!(kept, 3.0, "the first content is kept");
    let q = p
        .db()
        .await?
        .query_one("SELECT reason, msg_id, raw FROM quarantine", &[])
        .await?;
    assert_eq!(q.get::<_, String>(0), "conflicting_duplicate");
    let raw: Vec<u8> = q.get(2);
    assert!(
        String::from_utf8_lossy(&raw).contains("0.1"),
        "raw bytes of the second kept"
    );
    // No second alert arrives for the duplicates.
    assert_eq!(alerts.wait_for(2, Duration::from_secs(2)).await.len(), 1);
    // A redelivery sent together with a new message (one batch, as a reconnect delivers
    // them): the batch's fast COPY of its samples meets the stored key, and the new message
    // is still stored, once.
    let fresh = sample(
        "st02",
        "dup-2",
        "441781-T-0001",
        "2026-11-28T11:00:00+08:00",
        &[("Cd", 0.1)],
    );
    p.publish(vec![msg, fresh]).await?;
    p.wait_count("SELECT count(*) FROM readings_full", 2, WAIT)
        .await?;
    assert_eq!(
        p.count("SELECT count(*) FROM samples").await?,
        2,
        "log:\n{}",
        p.soilmon.log()
    );
    assert_eq!(p.count("SELECT count(*) FROM readings_full").await?, 2);
    assert_eq!(
        p.count("SELECT count(*) FROM archive WHERE ref = 'st02/dup-2'")
            .await?,
        1
    );
    Ok(())
}

/// Opened → escalated → de-escalated → cleared after two clean samples; a late older
/// exceedance raises a `late_exceedance` of the open incident and changes nothing else;
/// development land has no standard for Zn.
#[tokio::test]
async fn incident_life_cycle_follows_sample_time() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let alerts = p
        .subscribe("soil/v1/alerts/441781/441781-T-0001/Cd")
        .await?;
    let point = "441781-T-0001";
    let seq = [
        ("c-1", "2026-11-01T08:00:00+08:00", 0.5), // screening: opened
        ("c-2", "2026-11-02T08:00:00+08:00", 2.5), // intervention: escalated
        ("c-3", "2026-11-03T08:00:00+08:00", 1.0), // screening: de-escalated
        ("c-4", "2026-11-04T08:00:00+08:00", 0.2), // clean 1
        ("c-0", "2026-10-01T08:00:00+08:00", 5.0), // late and older: late_exceedance only
        ("c-5", "2026-11-05T08:00:00+08:00", 0.1), // clean 2: cleared
    ];
    for (id, at, v) in seq {
        // One at a time so each lands in its own batch.
        p.publish(vec![sample("st03", id, point, at, &[("Cd", v)])])
            .await?;
        p.wait_count(
            &format!("SELECT count(*) FROM samples WHERE msg_id = '{id}'"),
            1,
            WAIT,
        )
        .await?;
    }
    let got = alerts.wait_for(5, WAIT).await;
    let states: Vec<String> = got
        .iter()
        .map(|(_, b)| json_of(b)["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        states,
        [
            "opened",
            "escalated",
            "deescalated",
            "late_exceedance",
            "cleared"
        ],
        "log:\n{}",
        p.soilmon.log()
    );
    let ids: Vec<String> = got
        .iter()
        .map(|(_, b)| json_of(b)["incident_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(ids.iter().all(|i| i == &ids[0]), "one incident throughout");
    assert_eq!(
        p.count("SELECT count(*) FROM readings_full").await?,
        6,
        "the late sample is stored"
    );
    assert_eq!(
        p.count("SELECT count(*) FROM incidents WHERE state = 'cleared'")
            .await?,
        1
    );
    // Zn on development land: stored, no standard, no alert. Pb above 400: screening.
    p.publish(vec![sample(
        "st03",
        "d-1",
        "441781-T-0002",
        "2026-11-06T08:00:00+08:00",
        &[("Zn", 5000.0), ("Pb", 450.0)],
    )])
    .await?;
    p.wait_count(
        "SELECT count(*) FROM readings_full WHERE point_id = '441781-T-0002'",
        2,
        WAIT,
    )
    .await?;
    let rows = p
        .db()
        .await?
        .query(
            "SELECT metal, level, standard_id FROM readings_full WHERE point_id = '441781-T-0002'
             ORDER BY metal",
            &[],
        )
        .await?;
    assert_eq!(rows[0].get::<_, String>(1), "screening");
    assert_eq!(
        rows[0].get::<_, Option<String>>(2).as_deref(),
        Some("GB 36600-2018")
    );
    assert_eq!(rows[1].get::<_, String>(1), "no_standard");
    assert!(alerts.wait_for(6, Duration::from_secs(1)).await.len() == 5);
    Ok(())
}

/// An open incident's track is written back when a batch moves it, and only then: a clean
/// sample newer than the track moves it (its newest time and its clean streak); a late
/// sample leaves it as it was, and its row is not written again (same row version).
#[tokio::test]
async fn an_open_track_is_written_back_only_when_a_batch_moves_it() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    let track = "SELECT to_char(last_sampled_at AT TIME ZONE 'UTC', 'MM-DD HH24:MI'), ok_streak,
                        xmin::text
                 FROM incident_tracks WHERE point_id = '441781-T-0001' AND metal = 'Cd'";
    let mut rows = Vec::new();
    for (id, at, cd) in [
        ("t-1", "2026-11-02T08:00:00+08:00", 0.5), // screening: opened
        ("t-2", "2026-11-03T08:00:00+08:00", 0.2), // clean 1: the track moves
        ("t-0", "2026-11-01T08:00:00+08:00", 0.6), // late: the track stays
    ] {
        p.publish(vec![sample("st03", id, "441781-T-0001", at, &[("Cd", cd)])])
            .await?;
        let committed = format!("SELECT count(*) FROM samples WHERE msg_id = '{id}'");
        p.wait_count(&committed, 1, WAIT).await?;
        let row = p.db().await?.query_one(track, &[]).await?;
        rows.push((
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, String>(2),
        ));
    }
    let log = p.soilmon.log();
    assert_eq!(
        (rows[0].0.as_str(), rows[0].1),
        ("11-02 00:00", 0),
        "log:\n{log}"
    );
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1),
        ("11-03 00:00", 1),
        "log:\n{log}"
    );
    assert_ne!(rows[1].2, rows[0].2, "the moved track is a new row version");
    assert_eq!(
        rows[2], rows[1],
        "the late sample's batch left the row alone"
    );
    Ok(())
}

/// pH absent on the sample and the point: the strictest band is used and marked assumed.
#[tokio::test]
async fn missing_ph_uses_the_strictest_band() -> anyhow::Result<()> {
    let p = Pipeline::start(&[]).await?;
    // Orchard, no pH: Cu orchard column, strictest band 150; As "other" strictest is 25 (pH>7.5).
    p.publish(vec![sample(
        "st04",
        "o-1",
        "441781-T-0003",
        "2026-11-06T08:00:00+08:00",
        &[("Cu", 160.0), ("As", 26.0)],
    )])
    .await?;
    p.wait_count("SELECT count(*) FROM readings_full", 2, WAIT)
        .await?;
    let rows = p
        .db()
        .await?
        .query(
            "SELECT metal, level, screening_mgkg, threshold_column, ph_assumed, ph_band
             FROM readings_full ORDER BY metal",
            &[],
        )
        .await?;
    let as_ = &rows[0];
    assert_eq!(as_.get::<_, String>(1), "screening");
    assert_eq!(as_.get::<_, Option<f64>>(2), Some(25.0));
    assert!(as_.get::<_, bool>(4));
    assert_eq!(as_.get::<_, Option<String>>(5).as_deref(), Some("pH>7.5"));
    let cu = &rows[1];
    assert_eq!(cu.get::<_, Option<f64>>(2), Some(150.0));
    assert_eq!(cu.get::<_, Option<String>>(3).as_deref(), Some("orchard"));
    Ok(())
}

/// A message's `samples` row is its idempotency key and part of its readings' provenance:
/// it cannot be removed (append-only, like the readings), so a redelivery stays a duplicate
/// and the other message of the batch is stored, once.
#[tokio::test]
async fn a_stored_sample_cannot_be_removed_and_a_redelivery_stays_a_duplicate() -> anyhow::Result<()>
{
    let p = Pipeline::start(&[]).await?;
    let first = sample(
        "st03",
        "again-1",
        "441781-T-0001",
        "2026-11-28T09:00:00+08:00",
        &[("Pb", 20.0), ("Cd", 0.1)],
    );
    p.publish(vec![first.clone()]).await?;
    p.wait_count("SELECT count(*) FROM readings_full", 2, WAIT)
        .await?;
    let refused = p
        .db()
        .await?
        .execute("DELETE FROM samples WHERE msg_id = 'again-1'", &[])
        .await;
    let e = refused.expect_err("a sample row must not be deletable");
    assert!(
        format!("{:?}", e.as_db_error()).contains("append-only"),
        "{e:?}"
    );
    let second = sample(
        "st03",
        "again-2",
        "441781-T-0001",
        "2026-11-28T09:05:00+08:00",
        &[("Pb", 21.0)],
    );
    p.publish(vec![first, second]).await?;
    p.wait_count("SELECT count(*) FROM samples", 2, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", p.soilmon.log()))?;
    p.wait_count("SELECT count(*) FROM readings_full", 3, WAIT)
        .await?;
    assert_eq!(
        p.count("SELECT count(*) FROM readings_full WHERE msg_id = 'again-1'")
            .await?,
        2
    );
    Ok(())
}

/// One batch that clears an incident opened earlier and opens the next one for the same
/// point and metal (the writer updates earlier incidents before inserting new ones, so the
/// one-open-incident-per-pair index holds): both are in the history, the first cleared,
/// and the alerts come in sample order.
#[tokio::test]
async fn one_batch_clears_an_incident_and_opens_the_next() -> anyhow::Result<()> {
    // The idle writer lingers, so the three queued messages form one batch.
    let mut p = Pipeline::start(&[("SOILMON__INGEST__BATCH_WAIT_MS", "1000")]).await?;
    let alerts = p.subscribe("soil/v1/alerts/#").await?;
    let cd = |id: &str, hour: u32, value: f64| {
        sample(
            "st01",
            id,
            "441781-T-0001",
            &format!("2026-11-28T{hour:02}:00:00+08:00"),
            &[("Cd", value)],
        )
    };
    p.publish(vec![cd("c-1", 1, 0.45)]).await?;
    let first = alerts.wait_for(1, WAIT).await;
    assert_eq!(first.len(), 1, "log:\n{}", p.soilmon.log());

    p.soilmon.terminate().await?;
    // clear_after = 2: two clean samples clear it, the third opens a new incident.
    p.publish(vec![
        cd("c-2", 2, 0.1),
        cd("c-3", 3, 0.1),
        cd("c-4", 4, 0.5),
    ])
    .await?;
    p.soilmon.start().await?;
    let got = alerts.wait_for(3, WAIT).await;
    let states: Vec<String> = got
        .iter()
        .map(|(_, body)| json_of(body)["state"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        states,
        ["opened", "cleared", "opened"],
        "log:\n{}",
        p.soilmon.log()
    );
    let ids: Vec<String> = got
        .iter()
        .map(|(_, body)| {
            json_of(body)["incident_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(ids[0], ids[1]);
    assert_ne!(ids[1], ids[2]);
    let rows = p
        .db()
        .await?
        .query(
            "SELECT incident_id::text, state, cleared_sampled_at IS NOT NULL
             FROM incidents ORDER BY opened_sampled_at",
            &[],
        )
        .await?;
    let history: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        history,
        vec![
            (ids[0].clone(), "cleared".to_string(), true),
            (ids[2].clone(), "open".to_string(), false),
        ]
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT stored_at) FROM samples WHERE msg_id <> 'c-1'")
            .await?,
        1,
        "the three queued messages were written in one batch"
    );
    Ok(())
}

/// A pair with no open incident keeps no track of its own (schema version 6): the newest
/// earlier sample is read from `readings`. A late exceedance older than a stored clean
/// sample still opens nothing (it raises a `late_exceedance` only), and a batch's own newer
/// clean sample does not hide its exceedance.
#[tokio::test]
async fn an_idle_pair_still_ignores_a_late_exceedance() -> anyhow::Result<()> {
    let mut p = Pipeline::start(&[("SOILMON__INGEST__BATCH_WAIT_MS", "1000")]).await?;
    let alerts = p.subscribe("soil/v1/alerts/#").await?;
    let at = |hour: u32| format!("2026-11-28T{hour:02}:00:00+08:00");
    let one = |id: &str, hour: u32, metal: &str, value: f64| {
        sample("st01", id, "441781-T-0001", &at(hour), &[(metal, value)])
    };
    // Cd: clean at 10:00, then a late exceedance sampled at 09:00, then one at 11:00.
    for (id, hour, value) in [("n-1", 10, 0.1), ("n-0", 9, 5.0), ("n-2", 11, 0.5)] {
        p.publish(vec![one(id, hour, "Cd", value)]).await?;
        p.wait_count(
            &format!("SELECT count(*) FROM samples WHERE msg_id = '{id}'"),
            1,
            WAIT,
        )
        .await?;
    }
    // Pb, in one batch: an exceedance at 12:00 and a clean sample at 13:00.
    p.soilmon.terminate().await?;
    p.publish(vec![
        one("m-1", 12, "Pb", 200.0),
        one("m-2", 13, "Pb", 10.0),
    ])
    .await?;
    p.soilmon.start().await?;
    let got = alerts.wait_for(3, WAIT).await;
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|(_, body)| {
            let v = json_of(body);
            let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
            (s("metal"), s("state"), s("msg_id"))
        })
        .collect();
    let want = |m: &str, state: &str, id: &str| (m.to_string(), state.to_string(), id.to_string());
    assert_eq!(
        seen,
        vec![
            want("Cd", "late_exceedance", "n-0"),
            want("Cd", "opened", "n-2"),
            want("Pb", "opened", "m-1")
        ],
        "log:\n{}",
        p.soilmon.log()
    );
    assert_eq!(
        p.count("SELECT count(DISTINCT stored_at) FROM samples WHERE msg_id LIKE 'm-%'")
            .await?,
        1,
        "the two Pb messages were written in one batch"
    );
    assert_eq!(p.count("SELECT count(*) FROM incidents").await?, 2);
    Ok(())
}

/// A point registered while the service runs is known to the next message, even when the
/// writer sat idle through the registry refresh (its next batch takes a fresh snapshot).
#[tokio::test]
async fn a_point_registered_while_idle_is_known_to_the_next_message() -> anyhow::Result<()> {
    let p = Pipeline::start(&[("SOILMON__INGEST__REGISTRY_REFRESH_SECS", "1")]).await?;
    p.db()
        .await?
        .execute(
            "INSERT INTO points (point_id, name, county_code, lon, lat, point_type, land_use, ph)
             VALUES ('441781-T-0999', 'new', '441781', 111.9, 21.8, 'basic', 'paddy', 6.2)",
            &[],
        )
        .await?;
    // Two refresh periods with nothing to write.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    p.publish(vec![sample(
        "st01",
        "new-1",
        "441781-T-0999",
        "2026-11-28T09:30:00+08:00",
        &[("Pb", 20.0)],
    )])
    .await?;
    p.wait_count(
        "SELECT count(*) FROM readings_full WHERE point_id = '441781-T-0999'",
        1,
        WAIT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", p.soilmon.log()))?;
    assert_eq!(p.count("SELECT count(*) FROM quarantine").await?, 0);
    Ok(())
}

/// Batches copy their readings side by side only into chunks that exist. TimescaleDB creates
/// a chunk in the inserting transaction and holds a lock on the hypertable until it ends, which
/// any other transaction creating a chunk waits for. Here a batch's COPY is held up (a test
/// trigger sleeps on its first reading) before it reaches a sample that needs a new chunk;
/// meanwhile the next batch, which needs another new chunk, is started. Had that one copied at
/// once, it would have created its chunk, then waited for the first batch to commit, while the
/// first waited for its chunk lock: a cycle that only the writer's 60 s lock timeout would
/// break, after this test's wait. It must instead wait for the first batch's commit before
/// copying, and both are stored once, with no batch failing.
#[tokio::test]
async fn a_batch_needing_a_new_chunk_copies_after_the_batches_ahead() -> anyhow::Result<()> {
    // An idle writer lingers for company, so the first two messages form one batch.
    let p = Pipeline::start(&[("SOILMON__INGEST__BATCH_WAIT_MS", "300")]).await?;
    let one = |station, msg_id, at| sample(station, msg_id, "441702-T-0001", at, &[("Pb", 20.0)]);
    // The recent chunk exists, as it would on a running network.
    p.publish(vec![one("st01", "live", "2026-11-01T08:00:00+08:00")])
        .await?;
    p.wait_count("SELECT count(*) FROM samples", 1, WAIT)
        .await?;
    p.db()
        .await?
        .batch_execute(
            "CREATE FUNCTION test_slow_reading() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.metal = 1 AND NEW.sample_key IN (
                     SELECT sample_key FROM samples WHERE msg_id = 'slow') THEN
                     PERFORM pg_sleep(2);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER test_slow_reading BEFORE INSERT ON readings
                 FOR EACH ROW EXECUTE FUNCTION test_slow_reading();",
        )
        .await?;
    p.publish(vec![
        one("st01", "slow", "2026-11-01T09:00:00+08:00"),
        one("st01", "old-x", "2005-01-01T09:00:00+08:00"),
    ])
    .await?;
    // The first batch is asleep in its COPY, before its new chunk.
    p.wait_count(
        "SELECT count(*) FROM pg_stat_activity
         WHERE wait_event = 'PgSleep' AND datname = current_database()",
        1,
        WAIT,
    )
    .await?;
    p.publish(vec![one("st02", "old-y", "2010-01-01T09:00:00+08:00")])
        .await?;
    p.wait_count("SELECT count(*) FROM samples", 4, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", p.soilmon.log()))?;
    assert_eq!(p.count("SELECT count(*) FROM readings_full").await?, 4);
    assert_eq!(
        p.count("SELECT count(DISTINCT stored_at) FROM samples WHERE msg_id IN ('slow', 'old-x')")
            .await?,
        1,
        "the slow message and the one needing a new chunk were written in one batch"
    );
    assert_eq!(
        p.count(
            "SELECT count(*) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'readings'"
        )
        .await?,
        3
    );
    let log = p.soilmon.log();
    assert!(!log.contains("batch not committed"), "log:\n{log}");
    Ok(())
}
