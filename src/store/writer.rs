//! The batch writer: one transaction per batch of MQTT messages.
//!
//! In that transaction: new messages are recorded under their idempotency key
//! (station, msg_id); their readings are judged and inserted; incident tracks are updated
//! and alert events written to the outbox; refused messages go to quarantine with a reject
//! reply in the outbox. Only after the commit does the collector acknowledge the messages,
//! so a crash at any point leads to redelivery, which this writer absorbs:
//! a redelivered message matches its stored hash and changes nothing.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Transaction};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::StoreError;
use crate::config::MqttConfig;
use crate::domain::incident::{self, Active, Change, Track};
use crate::domain::judge::{judge, Judgement, Level};
use crate::domain::standard::Standards;
use crate::ingest::payload::{RejectCode, Rejection, Sample};
use crate::registry::Registry;

/// One message as it came off the broker, with the outcome of parsing it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Topic it was published on.
    pub topic: String,
    /// Station id from the topic, when the topic had the expected shape.
    pub station_id: Option<String>,
    /// Raw payload.
    pub payload: Vec<u8>,
    /// When soilmon received it.
    pub received_at: DateTime<Utc>,
    /// Parsed sample or the reason it was refused.
    pub parsed: Result<Sample, Rejection>,
}

/// Everything the writer needs besides the data.
pub struct Context<'a> {
    /// Point registry snapshot the batch was parsed against.
    pub registry: &'a Registry,
    /// Standards in force.
    pub standards: &'a Standards,
    /// Topic layout.
    pub mqtt: &'a MqttConfig,
    /// Consecutive non-exceeding samples that clear an incident.
    pub clear_after: u32,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Messages stored for the first time.
    pub stored: usize,
    /// Readings inserted.
    pub readings: usize,
    /// Readings per judgement level.
    pub levels: BTreeMap<&'static str, usize>,
    /// Redelivered copies of already-stored messages (acked, nothing written).
    pub duplicates: usize,
    /// Refused messages per reason code (newly quarantined).
    pub rejected: BTreeMap<&'static str, usize>,
    /// Alert events written to the outbox.
    pub alerts: usize,
}

impl BatchReport {
    /// True when the batch wrote anything the publisher should send.
    pub fn has_outbox(&self) -> bool {
        self.alerts > 0 || self.rejected.values().any(|n| *n > 0)
    }
}

/// A refusal on its way to quarantine.
struct Refusal<'a> {
    msg: &'a Received,
    code: RejectCode,
    detail: String,
    msg_id: Option<String>,
}

/// Writes one batch in one transaction. Safe to call again with the same batch after a
/// failure (including an unknown COMMIT outcome): nothing is stored twice.
pub async fn write_batch(
    client: &mut Client,
    ctx: &Context<'_>,
    batch: &[Received],
) -> Result<BatchReport, StoreError> {
    let mut report = BatchReport::default();
    let mut refusals: Vec<Refusal> = Vec::new();
    // In-batch de-duplication: the broker may redeliver a message while its first copy is
    // still waiting in this batch.
    let mut first: HashMap<(&str, &str), &Sample> = HashMap::new();
    let mut candidates: Vec<(&Received, &Sample)> = Vec::new();
    for msg in batch {
        match &msg.parsed {
            Err(r) => refusals.push(Refusal {
                msg,
                code: r.code,
                detail: r.detail.clone(),
                msg_id: r.msg_id.clone(),
            }),
            Ok(s) => match first.get(&(s.station_id.as_str(), s.msg_id.as_str())) {
                Some(prev) if prev.content_sha256 == s.content_sha256 => report.duplicates += 1,
                Some(_) => refusals.push(conflict(msg, s)),
                None => {
                    first.insert((&s.station_id, &s.msg_id), s);
                    candidates.push((msg, s));
                }
            },
        }
    }

    let tx = client.transaction().await?;
    let inserted = insert_messages(&tx, &candidates).await?;
    let mut fresh: Vec<(&Received, &Sample)> = Vec::new();
    let mut seen: Vec<(&Received, &Sample)> = Vec::new();
    for c in candidates {
        if inserted.contains(&(c.1.station_id.clone(), c.1.msg_id.clone())) {
            fresh.push(c);
        } else {
            seen.push(c);
        }
    }
    if !seen.is_empty() {
        let stored = stored_hashes(&tx, &seen).await?;
        for (msg, s) in seen {
            match stored.get(&(s.station_id.clone(), s.msg_id.clone())) {
                Some(h) if *h == s.content_sha256 => report.duplicates += 1,
                _ => refusals.push(conflict(msg, s)),
            }
        }
    }

    let judged = judge_all(ctx, &fresh);
    report.stored = fresh.len();
    report.readings = judged.len();
    for j in &judged {
        *report.levels.entry(j.judgement.level.as_str()).or_default() += 1;
    }
    insert_readings(&tx, &judged).await?;
    report.alerts = update_incidents(&tx, ctx, &judged).await?;
    report.rejected = quarantine(&tx, ctx, &refusals).await?;
    tx.commit().await?;
    Ok(report)
}

fn conflict<'a>(msg: &'a Received, s: &Sample) -> Refusal<'a> {
    Refusal {
        msg,
        code: RejectCode::ConflictingDuplicate,
        detail: format!(
            "msg_id {:?} was already stored with different content; the first is kept",
            s.msg_id
        ),
        msg_id: Some(s.msg_id.clone()),
    }
}

async fn insert_messages(
    tx: &Transaction<'_>,
    list: &[(&Received, &Sample)],
) -> Result<Vec<(String, String)>, StoreError> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    let col = |f: fn(&Received, &Sample) -> String| -> Vec<String> {
        list.iter().map(|(m, s)| f(m, s)).collect()
    };
    let stations = col(|_, s| s.station_id.clone());
    let ids = col(|_, s| s.msg_id.clone());
    let hashes = col(|_, s| s.content_sha256.clone());
    let points = col(|_, s| s.point_id.clone());
    let topics = col(|m, _| m.topic.clone());
    let sampled: Vec<DateTime<Utc>> = list.iter().map(|(_, s)| s.sampled_at).collect();
    let payloads: Vec<Value> = list.iter().map(|(_, s)| s.payload.clone()).collect();
    let received: Vec<DateTime<Utc>> = list.iter().map(|(m, _)| m.received_at).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO messages (station_id, msg_id, content_sha256, point_id, sampled_at,
                                   topic, payload, received_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                  $5::timestamptz[], $6::text[], $7::jsonb[], $8::timestamptz[])
             ON CONFLICT (station_id, msg_id) DO NOTHING
             RETURNING station_id, msg_id",
        )
        .await?;
    let rows = tx
        .query(
            &stmt,
            &[
                &stations, &ids, &hashes, &points, &sampled, &topics, &payloads, &received,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

async fn stored_hashes(
    tx: &Transaction<'_>,
    list: &[(&Received, &Sample)],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let stations: Vec<&str> = list.iter().map(|(_, s)| s.station_id.as_str()).collect();
    let ids: Vec<&str> = list.iter().map(|(_, s)| s.msg_id.as_str()).collect();
    let rows = tx
        .query(
            "SELECT m.station_id, m.msg_id, m.content_sha256
             FROM messages m
             JOIN unnest($1::text[], $2::text[]) AS k(station_id, msg_id)
               ON m.station_id = k.station_id AND m.msg_id = k.msg_id",
            &[&stations, &ids],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// One judged reading of a freshly stored message.
struct Judged<'a> {
    msg: &'a Received,
    sample: &'a Sample,
    index: usize,
    county: &'a str,
    land_use: &'static str,
    ph: Option<f64>,
    judgement: Judgement,
}

fn judge_all<'a>(ctx: &Context<'a>, fresh: &[(&'a Received, &'a Sample)]) -> Vec<Judged<'a>> {
    let mut out = Vec::new();
    for (msg, sample) in fresh {
        // The registry snapshot is the one the sample was validated against.
        let Some(point) = ctx.registry.get(&sample.point_id) else {
            continue;
        };
        let ph = sample.ph.or(point.ph);
        for (index, r) in sample.readings.iter().enumerate() {
            let judgement = judge(
                ctx.standards,
                point.land_use,
                ph,
                r.metal,
                r.value_mgkg,
                r.detected,
            );
            out.push(Judged {
                msg,
                sample,
                index,
                county: &point.county_code,
                land_use: point.land_use.as_str(),
                ph,
                judgement,
            });
        }
    }
    out
}

async fn insert_readings(tx: &Transaction<'_>, judged: &[Judged<'_>]) -> Result<(), StoreError> {
    if judged.is_empty() {
        return Ok(());
    }
    let t = |j: &Judged| j.judgement.thresholds.clone();
    let reading = |j: &Judged| j.sample.readings[j.index].clone();
    let sampled: Vec<DateTime<Utc>> = judged.iter().map(|j| j.sample.sampled_at).collect();
    let points: Vec<&str> = judged.iter().map(|j| j.sample.point_id.as_str()).collect();
    let metals: Vec<&str> = judged.iter().map(|j| reading(j).metal.symbol()).collect();
    let stations: Vec<&str> = judged
        .iter()
        .map(|j| j.sample.station_id.as_str())
        .collect();
    let ids: Vec<&str> = judged.iter().map(|j| j.sample.msg_id.as_str()).collect();
    let mgkg: Vec<f64> = judged.iter().map(|j| reading(j).value_mgkg).collect();
    let orig: Vec<f64> = judged.iter().map(|j| reading(j).value_orig).collect();
    let units: Vec<String> = judged.iter().map(|j| reading(j).unit_orig).collect();
    let detected: Vec<bool> = judged.iter().map(|j| reading(j).detected).collect();
    let levels: Vec<&str> = judged.iter().map(|j| j.judgement.level.as_str()).collect();
    let screening: Vec<Option<f64>> = judged.iter().map(|j| t(j).map(|t| t.screening)).collect();
    let intervention: Vec<Option<f64>> = judged
        .iter()
        .map(|j| t(j).and_then(|t| t.intervention))
        .collect();
    let std_ids: Vec<Option<String>> = judged.iter().map(|j| t(j).map(|t| t.standard_id)).collect();
    let std_versions: Vec<Option<String>> = judged
        .iter()
        .map(|j| t(j).map(|t| t.standard_version))
        .collect();
    let columns: Vec<Option<String>> = judged.iter().map(|j| t(j).map(|t| t.column)).collect();
    let s_src: Vec<Option<String>> = judged
        .iter()
        .map(|j| t(j).map(|t| t.screening_source))
        .collect();
    let i_src: Vec<Option<String>> = judged
        .iter()
        .map(|j| t(j).and_then(|t| t.intervention_source))
        .collect();
    let land_uses: Vec<&str> = judged.iter().map(|j| j.land_use).collect();
    let phs: Vec<Option<f64>> = judged.iter().map(|j| j.ph).collect();
    let bands: Vec<Option<String>> = judged
        .iter()
        .map(|j| t(j).and_then(|t| t.ph_band).map(|b| b.to_string()))
        .collect();
    let assumed: Vec<bool> = judged
        .iter()
        .map(|j| t(j).is_some_and(|t| t.ph_assumed))
        .collect();
    let methods: Vec<Option<&str>> = judged.iter().map(|j| j.sample.method.as_deref()).collect();
    let tops: Vec<Option<f64>> = judged
        .iter()
        .map(|j| j.sample.depth_cm.map(|d| d.0))
        .collect();
    let bottoms: Vec<Option<f64>> = judged
        .iter()
        .map(|j| j.sample.depth_cm.map(|d| d.1))
        .collect();
    let received: Vec<DateTime<Utc>> = judged.iter().map(|j| j.msg.received_at).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO readings (sampled_at, point_id, metal, source, source_id, msg_id,
                 value_mgkg, value_orig, unit_orig, detected, level, screening_mgkg,
                 intervention_mgkg, standard_id, standard_version, threshold_column,
                 screening_source, intervention_source, land_use, ph, ph_band, ph_assumed,
                 method, depth_top_cm, depth_bottom_cm, received_at)
             SELECT s, p, m, 'station', st, id, v, vo, u, d, l, sc, iv, sid, sv, col, ss, isr,
                    lu, ph, b, a, me, dt, db, r
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::float8[], $7::float8[], $8::text[], $9::bool[], $10::text[],
                         $11::float8[], $12::float8[], $13::text[], $14::text[], $15::text[],
                         $16::text[], $17::text[], $18::text[], $19::float8[], $20::text[],
                         $21::bool[], $22::text[], $23::float8[], $24::float8[],
                         $25::timestamptz[])
                  AS x(s, p, m, st, id, v, vo, u, d, l, sc, iv, sid, sv, col, ss, isr, lu, ph,
                       b, a, me, dt, db, r)
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &sampled,
            &points,
            &metals,
            &stations,
            &ids,
            &mgkg,
            &orig,
            &units,
            &detected,
            &levels,
            &screening,
            &intervention,
            &std_ids,
            &std_versions,
            &columns,
            &s_src,
            &i_src,
            &land_uses,
            &phs,
            &bands,
            &assumed,
            &methods,
            &tops,
            &bottoms,
            &received,
        ],
    )
    .await?;
    Ok(())
}

fn level_from(text: Option<&str>) -> Level {
    match text {
        Some("intervention") => Level::Intervention,
        _ => Level::Screening,
    }
}

/// Applies the judged readings to the incident tracks (in `sampled_at` order), records
/// incident history and writes one outbox event per state change. Returns the event count.
async fn update_incidents(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    judged: &[Judged<'_>],
) -> Result<usize, StoreError> {
    if judged.is_empty() {
        return Ok(0);
    }
    let mut order: Vec<&Judged> = judged.iter().collect();
    order.sort_by_key(|j| j.sample.sampled_at);
    let keys: BTreeMap<(&str, &str), ()> = order
        .iter()
        .map(|j| ((j.sample.point_id.as_str(), j.metal_symbol()), ()))
        .collect();
    let key_points: Vec<&str> = keys.keys().map(|k| k.0).collect();
    let key_metals: Vec<&str> = keys.keys().map(|k| k.1).collect();
    let rows = tx
        .query(
            "SELECT t.point_id, t.metal, t.last_sampled_at, t.incident_id, t.level, t.ok_streak
             FROM incident_tracks t
             JOIN unnest($1::text[], $2::text[]) AS k(point_id, metal)
               ON t.point_id = k.point_id AND t.metal = k.metal
             ORDER BY t.point_id, t.metal
             FOR UPDATE OF t",
            &[&key_points, &key_metals],
        )
        .await?;
    let mut tracks: HashMap<(String, String), Track> = HashMap::new();
    for r in rows {
        let incident_id: Option<Uuid> = r.get(3);
        let level: Option<&str> = r.get(4);
        let ok_streak: i32 = r.get(5);
        tracks.insert(
            (r.get(0), r.get(1)),
            Track {
                last_sampled_at: r.get(2),
                active: incident_id.map(|incident_id| Active {
                    incident_id,
                    level: level_from(level),
                    ok_streak: u32::try_from(ok_streak).unwrap_or(0),
                }),
            },
        );
    }

    let mut events = 0;
    for j in order {
        let key = (j.sample.point_id.clone(), j.metal_symbol().to_string());
        let prev = tracks.get(&key);
        let (next, change) = incident::apply(
            prev,
            j.sample.sampled_at,
            j.judgement.level,
            ctx.clear_after,
            Uuid::now_v7,
        );
        if let Some(change) = change {
            record_change(tx, ctx, j, &change).await?;
            events += 1;
        }
        tracks.insert(key, next);
    }

    let mut points = Vec::new();
    let mut metals = Vec::new();
    let mut last = Vec::new();
    let mut ids = Vec::new();
    let mut levels = Vec::new();
    let mut streaks = Vec::new();
    for ((p, m), t) in &tracks {
        points.push(p.as_str());
        metals.push(m.as_str());
        last.push(t.last_sampled_at);
        ids.push(t.active.as_ref().map(|a| a.incident_id));
        levels.push(t.active.as_ref().map(|a| a.level.as_str()));
        streaks.push(t.active.as_ref().map_or(0, |a| a.ok_streak as i32));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO incident_tracks (point_id, metal, last_sampled_at, incident_id, level,
                                          ok_streak)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::uuid[],
                                  $5::text[], $6::int4[])
             ON CONFLICT (point_id, metal) DO UPDATE SET
                 last_sampled_at = EXCLUDED.last_sampled_at,
                 incident_id = EXCLUDED.incident_id,
                 level = EXCLUDED.level,
                 ok_streak = EXCLUDED.ok_streak",
        )
        .await?;
    tx.execute(&stmt, &[&points, &metals, &last, &ids, &levels, &streaks])
        .await?;
    Ok(events)
}

impl Judged<'_> {
    fn metal_symbol(&self) -> &'static str {
        self.sample.readings[self.index].metal.symbol()
    }
}

/// Writes the incident history row and the outbox event of one state change.
async fn record_change(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    j: &Judged<'_>,
    change: &Change,
) -> Result<(), StoreError> {
    let reading = &j.sample.readings[j.index];
    let level = change.level.as_str();
    let at = j.sample.sampled_at;
    match change.transition {
        incident::Transition::Opened => {
            tx.execute(
                "INSERT INTO incidents (incident_id, point_id, metal, county_code, state, level,
                                        opened_sampled_at, updated_sampled_at)
                 VALUES ($1, $2, $3, $4, 'open', $5, $6, $6)",
                &[
                    &change.incident_id,
                    &j.sample.point_id,
                    &reading.metal.symbol(),
                    &j.county,
                    &level,
                    &at,
                ],
            )
            .await?;
        }
        incident::Transition::Escalated | incident::Transition::Deescalated => {
            tx.execute(
                "UPDATE incidents SET level = $2, updated_sampled_at = $3 WHERE incident_id = $1",
                &[&change.incident_id, &level, &at],
            )
            .await?;
        }
        incident::Transition::Cleared => {
            tx.execute(
                "UPDATE incidents SET state = 'cleared', updated_sampled_at = $2,
                        cleared_sampled_at = $2
                 WHERE incident_id = $1",
                &[&change.incident_id, &at],
            )
            .await?;
        }
    }
    let event_id = Uuid::now_v7();
    let t = j.judgement.thresholds.as_ref();
    let payload = json!({
        "event_id": event_id,
        "incident_id": change.incident_id,
        "state": change.transition.as_str(),
        "level": level,
        "point_id": j.sample.point_id,
        "county_code": j.county,
        "metal": reading.metal.symbol(),
        "value_mgkg": reading.value_mgkg,
        "value_orig": reading.value_orig,
        "unit_orig": reading.unit_orig,
        "detected": reading.detected,
        "reading_level": j.judgement.level.as_str(),
        "screening_mgkg": t.map(|t| t.screening),
        "intervention_mgkg": t.and_then(|t| t.intervention),
        "standard": t.map(|t| t.standard_id.as_str()),
        "standard_version": t.map(|t| t.standard_version.as_str()),
        "screening_source": t.map(|t| t.screening_source.as_str()),
        "intervention_source": t.and_then(|t| t.intervention_source.as_deref()),
        "threshold_column": t.map(|t| t.column.as_str()),
        "land_use": j.land_use,
        "ph": j.ph,
        "ph_band": t.and_then(|t| t.ph_band).map(|b| b.to_string()),
        "ph_assumed": t.is_some_and(|t| t.ph_assumed),
        "sampled_at": at,
        "msg_id": j.sample.msg_id,
        "station_id": j.sample.station_id,
        "source": "station",
    });
    let topic = ctx
        .mqtt
        .alert_topic(j.county, &j.sample.point_id, reading.metal);
    insert_outbox(tx, event_id, "alert", &topic, &payload).await
}

async fn insert_outbox(
    tx: &Transaction<'_>,
    event_id: Uuid,
    kind: &str,
    topic: &str,
    payload: &Value,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO outbox (event_id, kind, topic, payload) VALUES ($1, $2, $3, $4)",
        )
        .await?;
    tx.execute(&stmt, &[&event_id, &kind, &topic, payload])
        .await?;
    Ok(())
}

/// Records refusals (once per distinct raw content and reason) and queues a reply to each
/// newly recorded one on the station's rejects topic.
async fn quarantine(
    tx: &Transaction<'_>,
    ctx: &Context<'_>,
    refusals: &[Refusal<'_>],
) -> Result<BTreeMap<&'static str, usize>, StoreError> {
    let mut counts = BTreeMap::new();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO quarantine (received_at, topic, station_id, msg_id, reason, detail, raw,
                                     raw_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (topic, raw_sha256, reason) DO NOTHING
             RETURNING id",
        )
        .await?;
    for r in refusals {
        let sha = hex::encode(Sha256::digest(&r.msg.payload));
        let new = tx
            .query_opt(
                &stmt,
                &[
                    &r.msg.received_at,
                    &r.msg.topic,
                    &r.msg.station_id,
                    &r.msg_id,
                    &r.code.as_str(),
                    &r.detail,
                    &r.msg.payload,
                    &sha,
                ],
            )
            .await?;
        let Some(row) = new else { continue };
        *counts.entry(r.code.as_str()).or_default() += 1;
        let Some(station) = &r.msg.station_id else {
            continue;
        };
        let quarantine_id: i64 = row.get(0);
        let event_id = Uuid::now_v7();
        let payload = json!({
            "event_id": event_id,
            "msg_id": r.msg_id,
            "reason": r.code.as_str(),
            "detail": r.detail,
            "received_at": r.msg.received_at,
            "quarantine_id": quarantine_id,
        });
        insert_outbox(
            tx,
            event_id,
            "reject",
            &ctx.mqtt.rejects_topic(station),
            &payload,
        )
        .await?;
    }
    Ok(counts)
}
