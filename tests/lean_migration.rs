//! Schema 10 (lean storage) keeps every reading's provenance and the archive's verification.
//!
//! The test migrates a fresh database only to schema 9 and writes station and lab readings
//! there as the schema-9 service did: one `messages` row per station message, one 26-column
//! `readings` row per reading (judged by the shipped standards: pH from the sample, from the
//! point, or assumed; a unit as sent other than mg/kg; a value below the detection limit; a lab
//! sample with two methods), and one archive entry per message and per batch, hashed by the
//! documented layout (`soilmon-readings-v1` / `soilmon-archive-v1`, written out again here so
//! the entries do not come from the code under test). It records what `readings_full` shows
//! for every reading and the chain head, migrates to schema 10, and asserts that every
//! reading shows the same 26 columns, value for value, and that `soilmon verify` passes with
//! the same head.

mod common;

use std::path::Path;

use anyhow::{ensure, Context, Result};
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use soilmon::config::load_standards;
use soilmon::domain::metal::Metal;
use soilmon::domain::point::{LandUse, Point, PointType};
use soilmon::domain::reading::{JudgedReading, Measured, Origin, Source};
use soilmon::domain::standard::{RotationRule, Standards};
use tokio_postgres::Client;

use common::{Soilmon, TestDb};

/// The 26 columns of the schema-9 table, in its order, as one text per reading.
const FULL_ROW: &str = "SELECT ROW(sampled_at, point_id, metal, source, source_id, msg_id,
        value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg, intervention_mgkg,
        standard_id, standard_version, threshold_column, screening_source, intervention_source,
        land_use, ph, ph_band, ph_assumed, method, depth_top_cm, depth_bottom_cm,
        received_at)::text
    FROM readings_full ORDER BY source, source_id, msg_id, metal, sampled_at";

fn point(id: &str, land_use: LandUse, ph: Option<f64>) -> Point {
    Point {
        id: id.into(),
        name: format!("point {id}"),
        county_code: id[..6].into(),
        lon: 113.0,
        lat: 22.0,
        point_type: PointType::Basic,
        land_use,
        ph,
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// One length-prefixed field of the documented hash layout.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn opt_f64(h: &mut Sha256, v: Option<f64>) {
    match v {
        None => field(h, b""),
        Some(x) => field(h, &x.to_bits().to_be_bytes()),
    }
}

/// The readings digest (`soilmon-readings-v1`) of `rows`: sorted by (msg_id, metal,
/// sampled_at), every digest field length-prefixed, floats by their IEEE-754 bits.
fn digest(rows: &[JudgedReading]) -> String {
    let mut sorted: Vec<&JudgedReading> = rows.iter().collect();
    sorted.sort_by_key(|j| {
        (
            j.msg_id.clone(),
            j.metal.symbol(),
            j.sampled_at.timestamp_micros(),
        )
    });
    let mut h = Sha256::new();
    field(&mut h, b"soilmon-readings-v1");
    field(&mut h, &(rows.len() as u64).to_be_bytes());
    for j in sorted {
        let t = j.judgement.thresholds.as_deref();
        field(&mut h, j.msg_id.as_bytes());
        field(&mut h, j.metal.symbol().as_bytes());
        field(&mut h, &j.sampled_at.timestamp_micros().to_be_bytes());
        field(&mut h, j.point_id.as_bytes());
        field(&mut h, &j.value_mgkg.to_bits().to_be_bytes());
        field(&mut h, &j.value_orig.to_bits().to_be_bytes());
        field(&mut h, j.unit_orig.as_bytes());
        field(&mut h, &[u8::from(j.detected)]);
        field(&mut h, j.judgement.level.as_str().as_bytes());
        opt_f64(&mut h, j.ph);
        opt_f64(&mut h, t.map(|t| t.screening));
        opt_f64(&mut h, t.and_then(|t| t.intervention));
        field(&mut h, t.map_or("", |t| t.standard_id.as_str()).as_bytes());
    }
    hex::encode(h.finalize())
}

/// The schema-9 writer of this test: messages, readings, archive entries.
struct OldWriter<'a> {
    db: &'a Client,
    standards: &'a Standards,
    seq: i64,
    head: String,
}

impl OldWriter<'_> {
    /// One 26-column `readings` row, as schema 9 stored it.
    async fn reading(&self, j: &JudgedReading) -> Result<()> {
        let t = j.judgement.thresholds.as_deref();
        self.db
            .execute(
                "INSERT INTO readings (sampled_at, point_id, metal, source, source_id, msg_id,
                     value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
                     intervention_mgkg, standard_id, standard_version, threshold_column,
                     screening_source, intervention_source, land_use, ph, ph_band, ph_assumed,
                     method, depth_top_cm, depth_bottom_cm, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                         $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)",
                &[
                    &j.sampled_at,
                    &j.point_id,
                    &j.metal.symbol(),
                    &j.source.as_str(),
                    &j.source_id,
                    &j.msg_id,
                    &j.value_mgkg,
                    &j.value_orig,
                    &j.unit_orig,
                    &j.detected,
                    &j.judgement.level.as_str(),
                    &t.map(|t| t.screening),
                    &t.and_then(|t| t.intervention),
                    &t.map(|t| t.standard_id.as_str()),
                    &t.map(|t| t.standard_version.as_str()),
                    &t.map(|t| t.column.as_str()),
                    &t.map(|t| t.screening_source.as_str()),
                    &t.and_then(|t| t.intervention_source.as_deref()),
                    &j.land_use.as_str(),
                    &j.ph,
                    &t.and_then(|t| t.ph_band).map(|b| b.to_string()),
                    &t.is_some_and(|t| t.ph_assumed),
                    &j.method,
                    &j.depth_cm.map(|d| d.0),
                    &j.depth_cm.map(|d| d.1),
                    &j.received_at,
                ],
            )
            .await?;
        Ok(())
    }

    /// One archive entry (`soilmon-archive-v1`) and the head moved to it.
    async fn entry(
        &mut self,
        kind: &str,
        reference: &str,
        raw: &[u8],
        rows: &[JudgedReading],
    ) -> Result<()> {
        self.seq += 1;
        let created_at = Utc::now().trunc_subsecs(6);
        let raw_sha256 = hex::encode(Sha256::digest(raw));
        let readings_digest = digest(rows);
        let mut h = Sha256::new();
        field(&mut h, b"soilmon-archive-v1");
        field(&mut h, &self.seq.to_be_bytes());
        field(&mut h, self.head.as_bytes());
        field(&mut h, kind.as_bytes());
        field(&mut h, reference.as_bytes());
        field(&mut h, raw_sha256.as_bytes());
        field(&mut h, readings_digest.as_bytes());
        field(&mut h, &created_at.timestamp_micros().to_be_bytes());
        let hash = hex::encode(h.finalize());
        self.db
            .execute(
                "INSERT INTO archive (seq, kind, ref, raw, raw_sha256, readings_digest,
                                      prev_hash, entry_hash, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &self.seq,
                    &kind,
                    &reference,
                    &raw,
                    &raw_sha256,
                    &readings_digest,
                    &self.head,
                    &hash,
                    &created_at,
                ],
            )
            .await?;
        self.db
            .execute(
                "UPDATE archive_head SET seq = $1, hash = $2 WHERE id",
                &[&self.seq, &hash],
            )
            .await?;
        self.head = hash;
        Ok(())
    }

    /// A station message: its `messages` row, its readings, its archive entry.
    async fn station(
        &mut self,
        station: &str,
        msg_id: &str,
        point: &Point,
        sampled_at: &str,
        sample_ph: Option<f64>,
        values: &[(Metal, f64, &str, bool)],
    ) -> Result<()> {
        let sampled_at = at(sampled_at);
        let received_at = Utc::now().trunc_subsecs(6);
        let origin = Origin {
            source: Source::Station,
            source_id: station,
            msg_id,
            sampled_at,
            received_at,
            ph: sample_ph,
            method: Some("XRF"),
            depth_cm: Some((0.0, 20.0)),
        };
        let rows = judged(self.standards, point, &origin, values);
        let raw = format!("{{\"msg_id\":\"{msg_id}\",\"station\":\"{station}\"}}");
        self.db
            .execute(
                "INSERT INTO messages (station_id, msg_id, content_sha256, point_id, sampled_at,
                                       topic, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &station,
                    &msg_id,
                    &hex::encode(Sha256::digest(raw.as_bytes())),
                    &point.id,
                    &sampled_at,
                    &format!("soilmon/stations/{station}/readings"),
                    &received_at,
                ],
            )
            .await?;
        for j in &rows {
            self.reading(j).await?;
        }
        let reference = format!("{station}/{msg_id}");
        self.entry("station_message", &reference, raw.as_bytes(), &rows)
            .await
    }
}

/// The judged readings of one sample.
fn judged(
    standards: &Standards,
    point: &Point,
    origin: &Origin<'_>,
    values: &[(Metal, f64, &str, bool)],
) -> Vec<JudgedReading> {
    values
        .iter()
        .map(|&(metal, value_orig, unit, detected)| {
            let value_mgkg = if unit == "µg/kg" {
                value_orig / 1000.0
            } else {
                value_orig
            };
            let m = Measured {
                metal,
                value_mgkg,
                value_orig,
                unit_orig: unit,
                detected,
            };
            JudgedReading::at_point(standards, point, origin, &m)
        })
        .collect()
}

/// A lab batch: sample S-1 analysed by two methods (Hg and As by AFS, the rest by ICP-MS) and
/// without its own pH, S-2 with one; one archive entry for the batch.
async fn lab_batch(w: &mut OldWriter<'_>, paddy: &Point, dry: &Point) -> Result<()> {
    let received_at = Utc::now().trunc_subsecs(6);
    let origin = |msg_id: &'static str, method, ph| Origin {
        source: Source::Lab,
        source_id: "B-OLD",
        msg_id,
        sampled_at: at("2026-10-02T10:00:00+08:00"),
        received_at,
        ph,
        method: Some(method),
        depth_cm: Some((0.0, 20.0)),
    };
    let mut rows = judged(
        w.standards,
        paddy,
        &origin("S-1", "AFS", None),
        &[
            (Metal::Hg, 0.2, "mg/kg", true),
            (Metal::As, 35.0, "mg/kg", true),
        ],
    );
    rows.extend(judged(
        w.standards,
        paddy,
        &origin("S-1", "ICP-MS", None),
        &[
            (Metal::Pb, 90.0, "mg/kg", true),
            (Metal::Cd, 0.8, "mg/kg", true),
        ],
    ));
    rows.extend(judged(
        w.standards,
        dry,
        &origin("S-2", "ICP-MS", Some(7.8)),
        &[
            (Metal::Cu, 120.0, "mg/kg", true),
            (Metal::Ni, 0.5, "mg/kg", false),
        ],
    ));
    for j in &rows {
        w.reading(j).await?;
    }
    let raw = b"batch_id,lab_id,sample_id,...\nB-OLD,LAB1,S-1,...\n";
    w.entry("lab_batch", "B-OLD", raw, &rows).await
}

async fn texts(db: &Client, sql: &str) -> Result<Vec<String>> {
    Ok(db.query(sql, &[]).await?.iter().map(|r| r.get(0)).collect())
}

#[tokio::test]
async fn provenance_and_verify_are_the_same_across_the_lean_migration() -> Result<()> {
    let test_db = TestDb::create().await?;
    let mut db = test_db.client().await?;
    let to9 = soilmon::store::migrate::run_to(&mut db, 9).await?;
    ensure!(to9.applied.last() == Some(&9), "{to9:?}");
    let standards = load_standards(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/standards")
            .as_path(),
        RotationRule::Stricter,
    )?;
    let paddy = point("441781-T-0001", LandUse::Paddy, Some(5.2));
    let dry = point("441781-T-0002", LandUse::DryLand, None);
    let housing = point("441702-T-0001", LandUse::DevelopmentFirst, None);
    for p in [&paddy, &dry, &housing] {
        db.execute(
            "INSERT INTO points (point_id, name, county_code, lon, lat, point_type, land_use, ph)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &p.id,
                &p.name,
                &p.county_code,
                &p.lon,
                &p.lat,
                &p.point_type.as_str(),
                &p.land_use.as_str(),
                &p.ph,
            ],
        )
        .await?;
    }
    let mut w = OldWriter {
        db: &db,
        standards: &standards,
        seq: 0,
        head: "0".repeat(64),
    };
    // The sample's pH; the point's pH; no pH at all (assumed); development land (Zn has no
    // threshold there); a unit other than mg/kg; a value below the detection limit.
    w.station(
        "st01",
        "m-1",
        &paddy,
        "2026-11-28T09:30:00+08:00",
        Some(6.8),
        &[
            (Metal::Cd, 0.45, "mg/kg", true),
            (Metal::Pb, 50.0, "mg/kg", true),
            (Metal::Hg, 300.0, "µg/kg", true),
        ],
    )
    .await?;
    w.station(
        "st01",
        "m-2",
        &paddy,
        "2026-11-28T10:30:00+08:00",
        None,
        &[
            (Metal::Cd, 0.2, "mg/kg", true),
            (Metal::As, 0.01, "mg/kg", false),
        ],
    )
    .await?;
    w.station(
        "st02",
        "m-1",
        &dry,
        "2026-11-28T11:30:00+08:00",
        None,
        &[
            (Metal::Cr, 260.0, "mg/kg", true),
            (Metal::Zn, 180.0, "mg/kg", true),
        ],
    )
    .await?;
    w.station(
        "st03",
        "m-1",
        &housing,
        "2026-11-29T08:00:00+08:00",
        None,
        &[
            (Metal::Pb, 500.0, "mg/kg", true),
            (Metal::Zn, 900.0, "mg/kg", true),
        ],
    )
    .await?;
    lab_batch(&mut w, &paddy, &dry).await?;
    let head = w.head.clone();
    drop(w);

    let before = texts(&db, FULL_ROW).await?;
    ensure!(before.len() == 15, "{before:#?}");
    // Migrates to the newest version: 10 first, then whatever later versions add, none of
    // which may change a reading's provenance either.
    let to10 = soilmon::store::migrate::run(&mut db).await?;
    ensure!(to10.applied.first() == Some(&10), "{to10:?}");
    let after = texts(&db, FULL_ROW).await?;
    for (b, a) in before.iter().zip(&after) {
        ensure!(
            a == b,
            "a reading's provenance changed:\n before {b}\n after  {a}"
        );
    }
    ensure!(
        after.len() == before.len(),
        "{} readings before, {} after",
        before.len(),
        after.len()
    );
    // The lab sample analysed by two methods has two sample rows; every station message one.
    let samples = texts(
        &db,
        "SELECT so.source || ':' || s.msg_id || ':' || s.part FROM samples s
         JOIN sources so USING (source_key) ORDER BY 1",
    )
    .await?;
    ensure!(
        samples
            == [
                "lab:S-1:0",
                "lab:S-1:1",
                "lab:S-2:0",
                "station:m-1:0",
                "station:m-1:0",
                "station:m-1:0",
                "station:m-2:0"
            ],
        "{samples:?}"
    );

    let out = Soilmon::new(&test_db.url, 1).command(&["verify"]).await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "verify after the migration: {text}");
    ensure!(
        text.contains("5 entries, 15 readings verified") && text.contains(&head),
        "verify covers every entry and reading written before, with the same head {head}: {text}"
    );

    // An edit of a migrated reading is still detected, by the entry written before.
    db.batch_execute(
        "SET session_replication_role = replica;
         UPDATE samples SET ph = 7.0 WHERE msg_id = 'm-2';
         RESET session_replication_role;",
    )
    .await?;
    let out = Soilmon::new(&test_db.url, 1).command(&["verify"]).await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        !out.status.success(),
        "an edited sample must fail verification: {text}"
    );
    ensure!(
        text.contains("st01/m-2"),
        "the broken entry is named: {text}"
    );
    test_db
        .drop_db()
        .await
        .context("dropping the test database")?;
    Ok(())
}

/// Schema 24 moves "not yet published" from `outbox.published_at` to the queue
/// `outbox_pending`: the rows unpublished before the migration are queued after it, the
/// published ones are not, and every row inserted later is queued, whoever inserts it.
#[tokio::test]
async fn unpublished_outbox_rows_stay_queued_across_schema_24() -> Result<()> {
    let test_db = TestDb::create().await?;
    let mut db = test_db.client().await?;
    soilmon::store::migrate::run_to(&mut db, 21).await?;
    let insert = "INSERT INTO outbox (event_id, kind, topic, payload, published_at)
                  VALUES (gen_random_uuid(), 'alert', $1, '{}', $2) RETURNING id";
    let mut unpublished = Vec::new();
    for (topic, published) in [("t/1", true), ("t/2", false), ("t/3", true), ("t/4", false)] {
        let at = published.then(Utc::now);
        let id: i64 = db.query_one(insert, &[&topic, &at]).await?.get(0);
        if !published {
            unpublished.push(id);
        }
    }
    soilmon::store::migrate::run(&mut db).await?;
    let queue = "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM outbox_pending";
    let queued: Vec<i64> = db.query_one(queue, &[]).await?.get(0);
    ensure!(
        queued == unpublished,
        "queued {queued:?}, unpublished before {unpublished:?}"
    );
    let later: i64 = db
        .query_one(
            "INSERT INTO outbox (event_id, kind, topic, payload)
             VALUES (gen_random_uuid(), 'reject', 't/5', '{}') RETURNING id",
            &[],
        )
        .await?
        .get(0);
    let queued: Vec<i64> = db.query_one(queue, &[]).await?.get(0);
    ensure!(
        queued.last() == Some(&later),
        "a row inserted after the migration is queued: {queued:?}"
    );
    test_db
        .drop_db()
        .await
        .context("dropping the test database")?;
    Ok(())
}

/// Schema 27 keeps outbox payloads as `json` text and adds `incident_id`: every row keeps its
/// JSON value, and the incident of an event whose payload names one (as a UUID) is filled in.
#[tokio::test]
async fn outbox_payloads_keep_their_json_and_gain_their_incident_across_schema_27() -> Result<()> {
    let test_db = TestDb::create().await?;
    let mut db = test_db.client().await?;
    soilmon::store::migrate::run_to(&mut db, 26).await?;
    let incident = uuid::Uuid::now_v7();
    let payloads = [
        serde_json::json!({"incident_id": incident, "state": "opened", "value_mgkg": 0.45,
                           "screening_source": "表 1，镉 水田", "ph": null}),
        serde_json::json!({"incident_id": null, "state": "late_exceedance"}),
        serde_json::json!({"incident_id": "not-a-uuid", "nested": {"a": [1, 2.5, "x"]}}),
        serde_json::json!({"reason": "bad_json"}),
    ];
    let mut ids = Vec::new();
    for p in &payloads {
        let id: i64 = db
            .query_one(
                "INSERT INTO outbox (event_id, kind, topic, payload)
                 VALUES (gen_random_uuid(), 'alert', 't/1', $1) RETURNING id",
                &[p],
            )
            .await?
            .get(0);
        ids.push(id);
    }
    soilmon::store::migrate::run(&mut db).await?;
    let kind: String = db
        .query_one(
            "SELECT data_type FROM information_schema.columns
             WHERE table_name = 'outbox' AND column_name = 'payload'",
            &[],
        )
        .await?
        .get(0);
    ensure!(kind == "json", "payload column is {kind}");
    for (id, before) in ids.iter().zip(&payloads) {
        let row = db
            .query_one(
                "SELECT payload::text, incident_id FROM outbox WHERE id = $1",
                &[id],
            )
            .await?;
        let after: serde_json::Value = serde_json::from_str(row.get(0))?;
        ensure!(&after == before, "row {id}: {after} after, {before} before");
        let got: Option<uuid::Uuid> = row.get(1);
        let want = (id == &ids[0]).then_some(incident);
        ensure!(
            got == want,
            "row {id}: incident_id {got:?}, expected {want:?}"
        );
    }
    test_db
        .drop_db()
        .await
        .context("dropping the test database")?;
    Ok(())
}
