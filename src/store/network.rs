//! Network management in the database: point programs and registration times, the newest
//! sample of each (point, metal) read through `readings_full`, and the overdue check (state
//! in `overdue_points`, events through the outbox, one transaction per check).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{outbox, StoreError};
use crate::config::MqttConfig;
use crate::domain::metal::Metal;
use crate::domain::obligation::{
    self, CountyCoverage, CoverageCell, Obligations, OverdueMetal, PointCoverage, StoredOverdue,
    Transition,
};
use crate::domain::point::{LandUse, Point, PointType};
use crate::registry::Registered;

/// A registered point with what network management adds to it.
#[derive(Debug, Clone)]
pub struct NetworkPoint {
    /// The point.
    pub point: Point,
    /// Programs it names in the registry.
    pub programs: Vec<String>,
    /// When it was first registered.
    pub registered_at: DateTime<Utc>,
}

/// Writes the named programs of imported points (after [`super::points::upsert`], in its
/// own statement per point; the points must exist).
pub async fn set_programs(client: &Client, rows: &[Registered]) -> Result<u64, StoreError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.point.id.as_str()).collect();
    // One text per point, ';'-joined: arrays of arrays must be rectangular in PostgreSQL.
    let programs: Vec<String> = rows.iter().map(|r| r.programs.join(";")).collect();
    let n = client
        .execute(
            "UPDATE points p SET programs = COALESCE(string_to_array(NULLIF(u.progs, ''), ';'), '{}')
             FROM unnest($1::text[], $2::text[]) AS u(id, progs)
             WHERE p.point_id = u.id",
            &[&ids, &programs],
        )
        .await?;
    Ok(n)
}

/// Every registered point with its programs and registration time (rows with a land use or
/// point type this build does not know are skipped).
pub async fn points(client: &impl GenericClient) -> Result<Vec<NetworkPoint>, StoreError> {
    let rows = client
        .query(
            "SELECT point_id, name, county_code, lon, lat, point_type, land_use, ph, programs,
                    registered_at
             FROM points ORDER BY point_id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let point_type = PointType::parse(r.get(5))?;
            let land_use = LandUse::parse(r.get(6))?;
            Some(NetworkPoint {
                point: Point {
                    id: r.get(0),
                    name: r.get(1),
                    county_code: r.get(2),
                    lon: r.get(3),
                    lat: r.get(4),
                    point_type,
                    land_use,
                    ph: r.get(7),
                },
                programs: r.get(8),
                registered_at: r.get(9),
            })
        })
        .collect())
}

/// The newest sample time of each (point, metal) of `points` that has one, every metal,
/// read through `readings_full` (one index probe per pair).
pub async fn last_samples(
    client: &impl GenericClient,
    points: &[NetworkPoint],
) -> Result<HashMap<String, HashMap<Metal, DateTime<Utc>>>, StoreError> {
    let mut ids = Vec::new();
    let mut metals = Vec::new();
    for p in points {
        for m in Metal::ALL {
            ids.push(p.point.id.as_str());
            metals.push(m.symbol());
        }
    }
    let rows = client
        .query(
            "SELECT u.p, u.m, (SELECT max(r.sampled_at) FROM readings_full r
                               WHERE r.point_id = u.p AND r.metal = u.m)
             FROM unnest($1::text[], $2::text[]) AS u(p, m)",
            &[&ids, &metals],
        )
        .await?;
    let mut out: HashMap<String, HashMap<Metal, DateTime<Utc>>> = HashMap::new();
    for r in rows {
        let (Some(metal), Some(t)) = (Metal::parse(r.get(1)), r.get::<_, Option<DateTime<Utc>>>(2))
        else {
            continue;
        };
        out.entry(r.get(0)).or_default().insert(metal, t);
    }
    Ok(out)
}

/// The overdue metals of every overdue point at `now`.
pub fn overdue_now(
    obligations: &Obligations,
    points: &[NetworkPoint],
    last: &HashMap<String, HashMap<Metal, DateTime<Utc>>>,
    now: DateTime<Utc>,
) -> BTreeMap<String, Vec<OverdueMetal>> {
    let none = HashMap::new();
    points
        .iter()
        .filter_map(|p| {
            let owed = obligations.owed(&p.point, &p.programs);
            let seen = last.get(&p.point.id).unwrap_or(&none);
            let due = obligation::overdue(&owed, seen, p.registered_at, now);
            (!due.is_empty()).then(|| (p.point.id.clone(), due))
        })
        .collect()
}

/// Arbitrary constant of the overdue check's transaction lock (two services never raise the
/// same event twice).
const OVERDUE_LOCK: i64 = 0x501_1315;

/// What one overdue check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Points overdue now.
    pub overdue: usize,
    /// `overdue` events raised (first time or reminder).
    pub raised: usize,
    /// `overdue_cleared` events raised.
    pub cleared: usize,
}

/// One overdue check at `now`: compares what is overdue with `overdue_points`, queues the
/// events in the outbox and updates the state, all in one transaction.
pub async fn check_overdue(
    client: &mut Client,
    obligations: &Obligations,
    mqtt: &MqttConfig,
    now: DateTime<Utc>,
) -> Result<CheckReport, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&OVERDUE_LOCK])
        .await?;
    let points = points(&tx).await?;
    let last = last_samples(&tx, &points).await?;
    let current = overdue_now(obligations, &points, &last, now);
    let stored = stored_overdue(&tx).await?;
    let by_id: HashMap<&str, &NetworkPoint> =
        points.iter().map(|p| (p.point.id.as_str(), p)).collect();
    let mut report = CheckReport {
        overdue: current.len(),
        ..CheckReport::default()
    };
    let mut events = Vec::new();
    for t in obligation::transitions(current, &stored.states, now) {
        match t {
            Transition::Raise {
                point_id,
                metals,
                reminder,
                next_reminder_at,
            } => {
                let Some(p) = by_id.get(point_id.as_str()) else {
                    continue;
                };
                let since = earliest_due(&metals);
                store_overdue(
                    &tx,
                    p,
                    &metals,
                    since,
                    next_reminder_at,
                    &obligations.version,
                    now,
                )
                .await?;
                events.push(overdue_event(
                    mqtt,
                    p,
                    &metals,
                    since,
                    reminder,
                    &obligations.version,
                    now,
                ));
                report.raised += 1;
            }
            Transition::Keep { point_id, metals } => {
                let symbols: Vec<&str> = metals.iter().map(|m| m.metal.symbol()).collect();
                tx.execute(
                    "UPDATE overdue_points SET metals = $2 WHERE point_id = $1",
                    &[&point_id, &symbols],
                )
                .await?;
            }
            Transition::Clear { point_id } => {
                if let Some((county, since)) = stored.rows.get(&point_id) {
                    tx.execute(
                        "DELETE FROM overdue_points WHERE point_id = $1",
                        &[&point_id],
                    )
                    .await?;
                    events.push(cleared_event(mqtt, &point_id, county, *since, now));
                    report.cleared += 1;
                }
            }
        }
    }
    if !events.is_empty() {
        let events: Vec<outbox::NewAlert> = events
            .into_iter()
            .map(|(id, topic, payload)| outbox::NewAlert::of_value(id, topic, &payload))
            .collect();
        outbox::insert_alerts(&tx, &events).await?;
    }
    tx.commit().await?;
    Ok(report)
}

/// The stored overdue rows: state per point, and (county, overdue since) for clearing.
struct Stored {
    states: HashMap<String, StoredOverdue>,
    rows: HashMap<String, (String, DateTime<Utc>)>,
}

async fn stored_overdue(tx: &Transaction<'_>) -> Result<Stored, StoreError> {
    let rows = tx
        .query(
            "SELECT point_id, county_code, overdue_since, next_reminder_at FROM overdue_points",
            &[],
        )
        .await?;
    let mut stored = Stored {
        states: HashMap::new(),
        rows: HashMap::new(),
    };
    for r in rows {
        let id: String = r.get(0);
        stored.states.insert(
            id.clone(),
            StoredOverdue {
                next_reminder_at: r.get(3),
            },
        );
        stored.rows.insert(id, (r.get(1), r.get(2)));
    }
    Ok(stored)
}

fn earliest_due(metals: &[OverdueMetal]) -> DateTime<Utc> {
    metals
        .iter()
        .map(|m| m.due_at)
        .min()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

async fn store_overdue(
    tx: &Transaction<'_>,
    p: &NetworkPoint,
    metals: &[OverdueMetal],
    since: DateTime<Utc>,
    next_reminder_at: DateTime<Utc>,
    version: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let symbols: Vec<&str> = metals.iter().map(|m| m.metal.symbol()).collect();
    tx.execute(
        "INSERT INTO overdue_points (point_id, county_code, overdue_since, raised_at,
                                     next_reminder_at, metals, obligations_version)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (point_id) DO UPDATE SET raised_at = EXCLUDED.raised_at,
             next_reminder_at = EXCLUDED.next_reminder_at, metals = EXCLUDED.metals,
             obligations_version = EXCLUDED.obligations_version",
        &[
            &p.point.id,
            &p.point.county_code,
            &since,
            &now,
            &next_reminder_at,
            &symbols,
            &version,
        ],
    )
    .await?;
    Ok(())
}

/// The topic of a point's network events (`…/alerts/{county}/{point}/overdue`), under the
/// county's alert tree so a bureau's `…/alerts/{county}/#` subscription receives them.
pub fn overdue_topic(mqtt: &MqttConfig, county: &str, point_id: &str) -> String {
    format!("{}/alerts/{county}/{point_id}/overdue", mqtt.topic_prefix)
}

fn overdue_event(
    mqtt: &MqttConfig,
    p: &NetworkPoint,
    metals: &[OverdueMetal],
    since: DateTime<Utc>,
    reminder: bool,
    version: &str,
    now: DateTime<Utc>,
) -> (Uuid, String, Value) {
    let id = Uuid::now_v7();
    let payload = json!({
        "event_id": id,
        "state": "overdue",
        "point_id": p.point.id,
        "county_code": p.point.county_code,
        "point_type": p.point.point_type.as_str(),
        "land_use": p.point.land_use.as_str(),
        "programs": p.programs,
        "overdue_since": since,
        "reminder": reminder,
        "metals": metals,
        "obligations_version": version,
        "checked_at": now,
    });
    (
        id,
        overdue_topic(mqtt, &p.point.county_code, &p.point.id),
        payload,
    )
}

fn cleared_event(
    mqtt: &MqttConfig,
    point_id: &str,
    county: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Uuid, String, Value) {
    let id = Uuid::now_v7();
    let payload = json!({
        "event_id": id,
        "state": "overdue_cleared",
        "point_id": point_id,
        "county_code": county,
        "overdue_since": since,
        "checked_at": now,
    });
    (id, overdue_topic(mqtt, county, point_id), payload)
}

/// The points overdue as of the last check, optionally only those of `counties`.
pub async fn overdue_list(
    client: &Client,
    counties: Option<&[String]>,
) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT point_id, county_code, overdue_since, raised_at, next_reminder_at, metals,
                    obligations_version
             FROM overdue_points
             WHERE $1::text[] IS NULL OR county_code = ANY($1)
             ORDER BY county_code, point_id",
            &[&counties],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "point_id": r.get::<_, String>(0),
                "county_code": r.get::<_, String>(1),
                "overdue_since": r.get::<_, DateTime<Utc>>(2),
                "raised_at": r.get::<_, DateTime<Utc>>(3),
                "next_reminder_at": r.get::<_, DateTime<Utc>>(4),
                "metals": r.get::<_, Vec<String>>(5),
                "obligations_version": r.get::<_, String>(6),
            })
        })
        .collect())
}

/// The coverage report: per county × point type × land use, and per county whether every
/// required point type is present.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Coverage {
    /// When it was computed.
    pub as_of: DateTime<Utc>,
    /// Obligations file id and version.
    pub obligations: String,
    /// Required point types per county, and their source.
    pub required_point_types: Vec<String>,
    /// Source of the coverage rule.
    pub source: String,
    /// The cells.
    pub cells: Vec<CoverageCell>,
    /// Per county.
    pub counties: Vec<CountyCoverage>,
}

/// Computes the coverage of the points of `counties` at `now` (samples read through
/// `readings_full`).
pub async fn coverage(
    client: &Client,
    obligations: &Obligations,
    counties: &[String],
    now: DateTime<Utc>,
) -> Result<Coverage, StoreError> {
    let mut points = points(client).await?;
    points.retain(|p| counties.contains(&p.point.county_code));
    let last = last_samples(client, &points).await?;
    let overdue = overdue_now(obligations, &points, &last, now);
    let pcs: Vec<PointCoverage<'_>> = points
        .iter()
        .map(|p| PointCoverage {
            point: &p.point,
            window_days: obligations.window_days(&p.point, &p.programs),
            last_sampled_at: last
                .get(&p.point.id)
                .and_then(|m| m.values().max().copied()),
            overdue: overdue.contains_key(&p.point.id),
        })
        .collect();
    let (cells, per_county) =
        obligation::coverage(&pcs, counties, &obligations.required_point_types, now);
    Ok(Coverage {
        as_of: now,
        obligations: format!("{} {}", obligations.id, obligations.version),
        required_point_types: obligations
            .required_point_types
            .iter()
            .map(|t| t.as_str().to_string())
            .collect(),
        source: obligations.coverage_source.clone(),
        cells,
        counties: per_county,
    })
}
