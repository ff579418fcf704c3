//! What the web console reads and writes: sessions, the incident workflow (each action in
//! `incident_actions`, the tamper-evident archive and the outbox, in one transaction), and
//! the scoped reads behind the map, the feed, the incident and point pages, the lab batch
//! history and the public disclosure page.
//!
//! Every read of county data takes a [`Scope`]; a point or incident outside it is reported
//! as absent, exactly like [`super::queries`], so another county's id answers the same 404
//! as a missing one.

use chrono::{DateTime, SubsecRound, Utc};
use deadpool_postgres::Client;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::archive::{self, Kind};
use super::outbox;
use super::queries::Scope;
use super::StoreError;
use crate::domain::workflow::{self, Action, Status};

// ---------------------------------------------------------------------------------------
// sessions
// ---------------------------------------------------------------------------------------

/// A live session: the token it was opened with (its SHA-256) and its CSRF token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// SHA-256 (hex) of the API token exchanged for the session.
    pub token_sha256: String,
    /// The CSRF token every state-changing request of the session must echo.
    pub csrf: String,
}

/// Stores a new session (keyed by the SHA-256 of its cookie value) valid for `hours`.
pub async fn create_session(
    client: &Client,
    session_sha256: &str,
    session: &Session,
    hours: u32,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO console_sessions (session_sha256, token_sha256, csrf, expires_at)
             VALUES ($1, $2, $3, now() + make_interval(hours => $4))",
            &[
                &session_sha256,
                &session.token_sha256,
                &session.csrf,
                &(hours as i32),
            ],
        )
        .await?;
    // Expired sessions are removed as new ones come in (a small, indexed delete).
    client
        .execute("DELETE FROM console_sessions WHERE expires_at < now()", &[])
        .await?;
    Ok(())
}

/// The unexpired session whose cookie value has this SHA-256.
pub async fn session(client: &Client, session_sha256: &str) -> Result<Option<Session>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT token_sha256, csrf FROM console_sessions
             WHERE session_sha256 = $1 AND expires_at > now()",
        )
        .await?;
    let row = client.query_opt(&stmt, &[&session_sha256]).await?;
    Ok(row.map(|r| Session {
        token_sha256: r.get(0),
        csrf: r.get(1),
    }))
}

/// Ends a session (logout).
pub async fn delete_session(client: &Client, session_sha256: &str) -> Result<(), StoreError> {
    client
        .execute(
            "DELETE FROM console_sessions WHERE session_sha256 = $1",
            &[&session_sha256],
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// incidents and the workflow
// ---------------------------------------------------------------------------------------

/// One incident as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    /// Incident id.
    pub incident_id: Uuid,
    /// Point.
    pub point_id: String,
    /// Point name (user-supplied text: rendered escaped).
    pub point_name: String,
    /// Analyte symbol.
    pub metal: String,
    /// County code.
    pub county_code: String,
    /// `open` or `cleared` (reading-driven).
    pub state: String,
    /// `screening` or `intervention`.
    pub level: String,
    /// Sampling time of the opening sample.
    pub opened_sampled_at: DateTime<Utc>,
    /// Sampling time of the last state change.
    pub updated_sampled_at: DateTime<Utc>,
    /// Sampling time of the clearing sample.
    pub cleared_sampled_at: Option<DateTime<Utc>>,
}

const INCIDENT_COLUMNS: &str = "i.incident_id, i.point_id, coalesce(p.name, ''), i.metal,
     i.county_code, i.state, i.level, i.opened_sampled_at, i.updated_sampled_at,
     i.cleared_sampled_at";

fn incident_of(r: &tokio_postgres::Row) -> IncidentView {
    IncidentView {
        incident_id: r.get(0),
        point_id: r.get(1),
        point_name: r.get(2),
        metal: r.get(3),
        county_code: r.get(4),
        state: r.get(5),
        level: r.get(6),
        opened_sampled_at: r.get(7),
        updated_sampled_at: r.get(8),
        cleared_sampled_at: r.get(9),
    }
}

/// One incident, or `None` when it does not exist or lies outside `scope`.
pub async fn incident(
    client: &Client,
    scope: &Scope,
    incident_id: Uuid,
) -> Result<Option<IncidentView>, StoreError> {
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i LEFT JOIN points p USING (point_id)
         WHERE i.incident_id = $1 AND ($2::text[] IS NULL OR i.county_code = ANY($2))"
    );
    let row = client
        .query_opt(&sql, &[&incident_id, &scope.filter()])
        .await?;
    Ok(row.as_ref().map(incident_of))
}

/// One recorded workflow action.
#[derive(Debug, Clone, Serialize)]
pub struct ActionRecord {
    /// The incident.
    pub incident_id: Uuid,
    /// What was done.
    pub action: Action,
    /// Who did it (the console user's token name).
    pub actor: String,
    /// Person assigned, note text or close reason (user-supplied: rendered escaped).
    pub detail: String,
    /// When (µs precision, as stored).
    pub at: DateTime<Utc>,
}

/// The workflow actions of an incident, oldest first.
pub async fn actions(client: &Client, incident_id: Uuid) -> Result<Vec<ActionRecord>, StoreError> {
    let rows = client
        .query(
            "SELECT action, actor, detail, at FROM incident_actions
             WHERE incident_id = $1 ORDER BY id",
            &[&incident_id],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(ActionRecord {
                incident_id,
                action: Action::parse(r.get(0))?,
                actor: r.get(1),
                detail: r.get(2),
                at: r.get(3),
            })
        })
        .collect())
}

/// Why recording an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No such incident in the caller's scope.
    #[error("not found")]
    NotFound,
    /// Refused by the workflow rules.
    #[error("{0}")]
    Refused(#[from] workflow::Refusal),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<tokio_postgres::Error> for ActionError {
    fn from(e: tokio_postgres::Error) -> Self {
        ActionError::Store(StoreError::Db(e))
    }
}

/// Records one workflow action on an incident of `scope`: the `incident_actions` row, an
/// `incident_action` archive entry (raw: the record as JSON) and an outbox event on
/// `topic`, all in one transaction. The incident row is locked so that two actions on one
/// incident are checked in turn.
pub async fn record_action(
    client: &mut Client,
    scope: &Scope,
    incident_id: Uuid,
    action: Action,
    actor: &str,
    detail: &str,
    topic: impl FnOnce(&IncidentView) -> String,
) -> Result<ActionRecord, ActionError> {
    let tx = client.transaction().await?;
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i LEFT JOIN points p USING (point_id)
         WHERE i.incident_id = $1 AND ($2::text[] IS NULL OR i.county_code = ANY($2))
         FOR UPDATE OF i"
    );
    let row = tx.query_opt(&sql, &[&incident_id, &scope.filter()]).await?;
    let inc = row.as_ref().map(incident_of).ok_or(ActionError::NotFound)?;
    let done = tx
        .query(
            "SELECT action, detail FROM incident_actions WHERE incident_id = $1 ORDER BY id",
            &[&incident_id],
        )
        .await?;
    let status = Status::of(
        done.iter()
            .filter_map(|r| Some((Action::parse(r.get(0))?, r.get::<_, &str>(1)))),
    );
    workflow::check(&status, action, detail)?;
    let record = ActionRecord {
        incident_id,
        action,
        actor: actor.to_string(),
        detail: detail.to_string(),
        at: Utc::now().trunc_subsecs(6),
    };
    let raw = serde_json::to_vec(&record)
        .map_err(|e| StoreError::Archive(format!("action record: {e}")))?;
    let empty = archive::readings_digest(&[]);
    let appended = archive::append(
        &tx,
        Kind::IncidentAction,
        &incident_id.to_string(),
        &raw,
        &empty,
    )
    .await?;
    tx.execute(
        "INSERT INTO incident_actions (incident_id, action, actor, detail, at, archive_seq)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &incident_id,
            &action.as_str(),
            &actor,
            &detail,
            &record.at,
            &appended.seq,
        ],
    )
    .await?;
    let event_id = Uuid::now_v7();
    let payload = action_event(event_id, &inc, &record);
    outbox::insert(&tx, event_id, "incident_action", &topic(&inc), &payload).await?;
    tx.commit().await?;
    Ok(record)
}

/// The outbox payload of a workflow action.
fn action_event(event_id: Uuid, inc: &IncidentView, r: &ActionRecord) -> Value {
    json!({
        "event_id": event_id,
        "event": "incident_action",
        "incident_id": inc.incident_id,
        "point_id": inc.point_id,
        "county_code": inc.county_code,
        "metal": inc.metal,
        "action": r.action,
        "actor": r.actor,
        "detail": r.detail,
        "at": r.at,
    })
}

/// One entry of the live feed: an alert event (outbox id as the cursor).
#[derive(Debug, Clone, Serialize)]
pub struct FeedItem {
    /// Outbox id (increasing: poll with `after`).
    pub id: i64,
    /// The alert event as published.
    pub event: Value,
    /// Name of the point (rendered escaped).
    pub point_name: String,
}

/// Alert events of `scope` newer than `after` (newest first, at most `limit`).
pub async fn feed(
    client: &Client,
    scope: &Scope,
    after: i64,
    limit: i64,
) -> Result<Vec<FeedItem>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT o.id, o.payload, coalesce(p.name, '') FROM outbox o
             LEFT JOIN points p ON p.point_id = o.payload->>'point_id'
             WHERE o.kind = 'alert' AND o.id > $1
               AND ($2::text[] IS NULL OR o.payload->>'county_code' = ANY($2))
             ORDER BY o.id DESC LIMIT $3",
        )
        .await?;
    let rows = client
        .query(&stmt, &[&after, &scope.filter(), &limit])
        .await?;
    Ok(rows
        .iter()
        .map(|r| FeedItem {
            id: r.get(0),
            event: r.get(1),
            point_name: r.get(2),
        })
        .collect())
}

/// Alert events of one incident, oldest first (the samples that opened, escalated,
/// de-escalated or cleared it).
pub async fn incident_events(client: &Client, incident_id: Uuid) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT payload FROM outbox WHERE kind = 'alert' AND incident_id = $1 ORDER BY id",
            &[&incident_id],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

// ---------------------------------------------------------------------------------------
// points: map, page, series
// ---------------------------------------------------------------------------------------

/// A point on the bureau map.
#[derive(Debug, Clone, Serialize)]
pub struct MapPoint {
    /// Point id.
    pub point_id: String,
    /// Name (rendered as text).
    pub name: String,
    /// County code.
    pub county_code: String,
    /// Longitude.
    pub lon: f64,
    /// Latitude.
    pub lat: f64,
    /// `basic`, `risk` or `background`.
    pub point_type: String,
    /// Land use.
    pub land_use: String,
    /// Soil screening tier (farmland points with readings), else `None`.
    pub tier: Option<String>,
    /// Worst open incident level, if any.
    pub open_level: Option<String>,
    /// Metals with an open incident.
    pub open_metals: Vec<String>,
}

/// Every point of `scope` with its tier and open incidents.
pub async fn map_points(client: &Client, scope: &Scope) -> Result<Vec<MapPoint>, StoreError> {
    let rows = client
        .query(
            "SELECT p.point_id, p.name, p.county_code, p.lon, p.lat, p.point_type, p.land_use,
                    t.soil_tier,
                    CASE WHEN bool_or(i.level = 'intervention') THEN 'intervention'
                         WHEN bool_or(i.level = 'screening') THEN 'screening' END,
                    coalesce(array_agg(i.metal ORDER BY i.metal)
                             FILTER (WHERE i.metal IS NOT NULL), '{}')
             FROM points p
             LEFT JOIN point_soil_tiers_snapshot t ON t.point_id = p.point_id
             LEFT JOIN incidents i ON i.point_id = p.point_id AND i.state = 'open'
             WHERE ($1::text[] IS NULL OR p.county_code = ANY($1))
             GROUP BY p.point_id, t.soil_tier
             ORDER BY p.point_id",
            &[&scope.filter()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| MapPoint {
            point_id: r.get(0),
            name: r.get(1),
            county_code: r.get(2),
            lon: r.get(3),
            lat: r.get(4),
            point_type: r.get(5),
            land_use: r.get(6),
            tier: r.get(7),
            open_level: r.get(8),
            open_metals: r.get(9),
        })
        .collect())
}

/// A point's registry entry, or `None` when missing or outside `scope`.
pub async fn point(
    client: &Client,
    scope: &Scope,
    point_id: &str,
) -> Result<Option<MapPoint>, StoreError> {
    let all = client
        .query_opt(
            "SELECT p.point_id, p.name, p.county_code, p.lon, p.lat, p.point_type, p.land_use,
                    t.soil_tier
             FROM points p LEFT JOIN point_soil_tiers_snapshot t ON t.point_id = p.point_id
             WHERE p.point_id = $1 AND ($2::text[] IS NULL OR p.county_code = ANY($2))",
            &[&point_id, &scope.filter()],
        )
        .await?;
    Ok(all.map(|r| MapPoint {
        point_id: r.get(0),
        name: r.get(1),
        county_code: r.get(2),
        lon: r.get(3),
        lat: r.get(4),
        point_type: r.get(5),
        land_use: r.get(6),
        tier: r.get(7),
        open_level: None,
        open_metals: Vec::new(),
    }))
}

/// One reading of a point as the console's tables, charts and downloads show it.
#[derive(Debug, Clone, Serialize)]
pub struct SampleRow {
    /// Sampling time.
    pub sampled_at: DateTime<Utc>,
    /// Analyte.
    pub metal: String,
    /// Value, mg/kg.
    pub value_mgkg: f64,
    /// Detected flag.
    pub detected: bool,
    /// Judgement level.
    pub level: String,
    /// Screening value used.
    pub screening_mgkg: Option<f64>,
    /// Intervention value used.
    pub intervention_mgkg: Option<f64>,
    /// Standard id.
    pub standard: Option<String>,
    /// pH used.
    pub ph: Option<f64>,
    /// pH band.
    pub ph_band: Option<String>,
    /// Whether the pH was assumed (strictest band).
    pub ph_assumed: bool,
    /// `station` or `lab`.
    pub source: String,
    /// Station or batch id.
    pub source_id: String,
}

/// Readings of a point (oldest first; one metal when `metal` is given), at most `limit`.
/// The caller has checked the point is in scope ([`point`]).
pub async fn samples(
    client: &Client,
    point_id: &str,
    metal: Option<&str>,
    limit: i64,
) -> Result<Vec<SampleRow>, StoreError> {
    let stmt = client
        .prepare_cached(
            "SELECT sampled_at, metal, value_mgkg, detected, level, screening_mgkg,
                    intervention_mgkg, standard_id, ph, ph_band, ph_assumed, source, source_id
             FROM (SELECT * FROM readings_full
                   WHERE point_id = $1 AND ($2::text IS NULL OR metal = $2)
                   ORDER BY sampled_at DESC, metal LIMIT $3) newest
             ORDER BY sampled_at, metal",
        )
        .await?;
    let rows = client.query(&stmt, &[&point_id, &metal, &limit]).await?;
    Ok(rows.iter().map(sample_row).collect())
}

/// A [`SampleRow`] from a row of the 13 sample columns both sample queries select, in order.
fn sample_row(r: &tokio_postgres::Row) -> SampleRow {
    SampleRow {
        sampled_at: r.get(0),
        metal: r.get(1),
        value_mgkg: r.get(2),
        detected: r.get(3),
        level: r.get(4),
        screening_mgkg: r.get(5),
        intervention_mgkg: r.get(6),
        standard: r.get(7),
        ph: r.get(8),
        ph_band: r.get(9),
        ph_assumed: r.get(10),
        source: r.get(11),
        source_id: r.get(12),
    }
}

/// The newest reading of each metal of a point (the map popup): one probe of the readings
/// index per metal, not a scan of the point's readings.
pub async fn latest_per_metal(
    client: &Client,
    point_id: &str,
) -> Result<Vec<SampleRow>, StoreError> {
    let rows = client
        .query(
            "SELECT f.sampled_at, f.metal, f.value_mgkg, f.detected, f.level,
                    f.screening_mgkg, f.intervention_mgkg, f.standard_id, f.ph, f.ph_band,
                    f.ph_assumed, f.source, f.source_id
             FROM points p CROSS JOIN metals m
             CROSS JOIN LATERAL (
                 SELECT * FROM readings_full r
                 WHERE r.point_key = p.point_key AND r.metal_code = m.metal
                 ORDER BY r.sampled_at DESC LIMIT 1) f
             WHERE p.point_id = $1
             ORDER BY f.metal",
            &[&point_id],
        )
        .await?;
    Ok(rows.iter().map(sample_row).collect())
}

// ---------------------------------------------------------------------------------------
// lab batch history, admin lists
// ---------------------------------------------------------------------------------------

/// One lab batch in the history.
#[derive(Debug, Clone, Serialize)]
pub struct BatchSummary {
    /// Batch id.
    pub batch_id: String,
    /// Lab id.
    pub lab_id: String,
    /// `accepted` or `rejected`.
    pub status: String,
    /// Rows.
    pub rows: i32,
    /// Errors in its report.
    pub errors: i64,
    /// When it came in.
    pub received_at: DateTime<Utc>,
}

/// The newest batches uploaded by `uploaded_by` (all uploaders when `None`).
pub async fn batches(
    client: &Client,
    uploaded_by: Option<&str>,
    limit: i64,
) -> Result<Vec<BatchSummary>, StoreError> {
    let rows = client
        .query(
            "SELECT batch_id, lab_id, status, row_count,
                    coalesce((report->>'error_count')::bigint, 0), received_at
             FROM lab_batches WHERE ($1::text IS NULL OR uploaded_by = $1)
             ORDER BY received_at DESC LIMIT $2",
            &[&uploaded_by, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| BatchSummary {
            batch_id: r.get(0),
            lab_id: r.get(1),
            status: r.get(2),
            rows: r.get(3),
            errors: r.get(4),
            received_at: r.get(5),
        })
        .collect())
}

/// Points whose id or name contains `search` (all when empty), at most `limit`.
pub async fn search_points(
    client: &Client,
    search: &str,
    limit: i64,
) -> Result<Vec<MapPoint>, StoreError> {
    let pattern = format!("%{}%", search.replace(['%', '_', '\\'], ""));
    let rows = client
        .query(
            "SELECT point_id, name, county_code, lon, lat, point_type, land_use FROM points
             WHERE point_id ILIKE $1 OR name ILIKE $1 ORDER BY point_id LIMIT $2",
            &[&pattern, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| MapPoint {
            point_id: r.get(0),
            name: r.get(1),
            county_code: r.get(2),
            lon: r.get(3),
            lat: r.get(4),
            point_type: r.get(5),
            land_use: r.get(6),
            tier: None,
            open_level: None,
            open_metals: Vec::new(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// public disclosure
// ---------------------------------------------------------------------------------------

/// A point as published: tier and (optionally) its latest values.
#[derive(Debug, Clone, Serialize)]
pub struct PublicPoint {
    /// Point id.
    pub point_id: String,
    /// Name.
    pub name: String,
    /// County code.
    pub county_code: String,
    /// Longitude (exact; rounded by the publisher).
    pub lon: f64,
    /// Latitude (exact; rounded by the publisher).
    pub lat: f64,
    /// Point type.
    pub point_type: String,
    /// Land use.
    pub land_use: String,
    /// Soil screening tier, if a farmland point with readings.
    pub tier: Option<String>,
    /// Sampling time of its newest reading.
    pub latest_sample: Option<DateTime<Utc>>,
    /// Latest value per metal, mg/kg, `{"Cd": 0.3, …}` (only read when values are public).
    pub values: Value,
}

/// The public points of one county (or the city when `county` is `None`) of the given
/// types, as a stream of rows (downloads stream them: nothing is collected here).
pub async fn public_points<'a>(
    client: &'a Client,
    county: Option<&'a str>,
    point_types: &'a [String],
    with_values: bool,
) -> Result<impl futures_util::Stream<Item = Result<PublicPoint, StoreError>> + 'a, StoreError> {
    use futures_util::StreamExt as _;
    let stmt = client
        .prepare_cached(
            "SELECT p.point_id, p.name, p.county_code, p.lon, p.lat, p.point_type, p.land_use,
                    t.soil_tier, t.latest_sample,
                    CASE WHEN $3 THEN (SELECT jsonb_object_agg(metal, value_mgkg) FROM (
                        SELECT DISTINCT ON (metal) metal, value_mgkg FROM readings_full r
                        WHERE r.point_id = p.point_id ORDER BY metal, sampled_at DESC) l)
                    END
             FROM points p LEFT JOIN point_soil_tiers_snapshot t ON t.point_id = p.point_id
             WHERE ($1::text IS NULL OR p.county_code = $1) AND p.point_type = ANY($2)
             ORDER BY p.county_code, p.point_id",
        )
        .await?;
    let params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send + 'a>> = vec![
        Box::new(county),
        Box::new(point_types),
        Box::new(with_values),
    ];
    let rows = client
        .query_raw(
            &stmt,
            params
                .iter()
                .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync)),
        )
        .await?;
    Ok(rows.map(|r| {
        let r = r?;
        Ok(PublicPoint {
            point_id: r.try_get(0)?,
            name: r.try_get(1)?,
            county_code: r.try_get(2)?,
            lon: r.try_get(3)?,
            lat: r.try_get(4)?,
            point_type: r.try_get(5)?,
            land_use: r.try_get(6)?,
            tier: r.try_get(7)?,
            latest_sample: r.try_get(8)?,
            values: r.try_get::<_, Option<Value>>(9)?.unwrap_or(Value::Null),
        })
    }))
}

/// Counts for the public page: points by type, farmland points by tier, newest sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublicSummary {
    /// (point type, count) for the public types.
    pub by_type: Vec<(String, i64)>,
    /// (tier, count) of farmland points with readings.
    pub by_tier: Vec<(String, i64)>,
    /// Newest sampling time among the public points.
    pub data_date: Option<DateTime<Utc>>,
}

/// The summary of the public page of one county (or the city).
pub async fn public_summary(
    client: &Client,
    county: Option<&str>,
    point_types: &[String],
) -> Result<PublicSummary, StoreError> {
    let by_type = client
        .query(
            "SELECT point_type, count(*) FROM points
             WHERE ($1::text IS NULL OR county_code = $1) AND point_type = ANY($2)
             GROUP BY 1 ORDER BY 1",
            &[&county, &point_types],
        )
        .await?;
    let by_tier = client
        .query(
            "SELECT t.soil_tier, count(*), max(t.latest_sample) FROM point_soil_tiers_snapshot t
             JOIN points p USING (point_id)
             WHERE ($1::text IS NULL OR p.county_code = $1) AND p.point_type = ANY($2)
             GROUP BY 1 ORDER BY 1",
            &[&county, &point_types],
        )
        .await?;
    Ok(PublicSummary {
        by_type: by_type.iter().map(|r| (r.get(0), r.get(1))).collect(),
        by_tier: by_tier.iter().map(|r| (r.get(0), r.get(1))).collect(),
        data_date: by_tier
            .iter()
            .filter_map(|r| r.get::<_, Option<DateTime<Utc>>>(2))
            .max(),
    })
}
