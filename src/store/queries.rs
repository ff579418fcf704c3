//! Read queries for bureaus and operators, always scoped to a set of counties.
//!
//! `Scope::All` is the city-wide view; `Scope::Counties` limits every query to those county
//! codes, and a point outside them is reported as absent (not forbidden), so a bureau learns
//! nothing about other counties' points.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::Client;

use super::StoreError;

/// Which counties a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every county.
    All,
    /// Only these county codes.
    Counties(Vec<String>),
}

impl Scope {
    /// The county filter as a SQL parameter: `None` means no filter.
    pub(crate) fn filter(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Counties(c) => Some(c.clone()),
        }
    }
}

/// Alert events (newest first) published or queued, optionally since a time.
pub async fn alerts(
    client: &Client,
    scope: &Scope,
    since: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT payload FROM outbox
             WHERE kind = 'alert'
               AND ($1::text[] IS NULL OR payload->>'county_code' = ANY($1))
               AND ($2::timestamptz IS NULL OR created_at >= $2)
             ORDER BY id DESC LIMIT $3",
            &[&scope.filter(), &since, &limit],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Incidents (newest first), optionally only open ones.
pub async fn incidents(
    client: &Client,
    scope: &Scope,
    open_only: bool,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT incident_id, point_id, metal, county_code, state, level,
                    opened_sampled_at, updated_sampled_at, cleared_sampled_at
             FROM incidents
             WHERE ($1::text[] IS NULL OR county_code = ANY($1))
               AND (NOT $2 OR state = 'open')
             ORDER BY updated_sampled_at DESC LIMIT $3",
            &[&scope.filter(), &open_only, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "incident_id": r.get::<_, uuid::Uuid>(0),
                "point_id": r.get::<_, String>(1),
                "metal": r.get::<_, String>(2),
                "county_code": r.get::<_, String>(3),
                "state": r.get::<_, String>(4),
                "level": r.get::<_, String>(5),
                "opened_sampled_at": r.get::<_, DateTime<Utc>>(6),
                "updated_sampled_at": r.get::<_, DateTime<Utc>>(7),
                "cleared_sampled_at": r.get::<_, Option<DateTime<Utc>>>(8),
            })
        })
        .collect())
}

/// Readings of one point (newest first), or `None` when the point does not exist or lies
/// outside the scope (the two are indistinguishable to the caller on purpose).
pub async fn point_readings(
    client: &Client,
    scope: &Scope,
    point_id: &str,
    limit: i64,
) -> Result<Option<Vec<Value>>, StoreError> {
    let visible = client
        .query_opt(
            "SELECT 1 FROM points
             WHERE point_id = $1 AND ($2::text[] IS NULL OR county_code = ANY($2))",
            &[&point_id, &scope.filter()],
        )
        .await?;
    if visible.is_none() {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT sampled_at, metal, value_mgkg, value_orig, unit_orig, detected, level,
                    screening_mgkg, intervention_mgkg, standard_id, ph, ph_band, ph_assumed,
                    source, source_id, msg_id
             FROM readings_full WHERE point_id = $1
             ORDER BY sampled_at DESC, metal LIMIT $2",
            &[&point_id, &limit],
        )
        .await?;
    Ok(Some(
        rows.iter()
            .map(|r| {
                json!({
                    "sampled_at": r.get::<_, DateTime<Utc>>(0),
                    "metal": r.get::<_, String>(1),
                    "value_mgkg": r.get::<_, f64>(2),
                    "value_orig": r.get::<_, f64>(3),
                    "unit_orig": r.get::<_, String>(4),
                    "detected": r.get::<_, bool>(5),
                    "level": r.get::<_, String>(6),
                    "screening_mgkg": r.get::<_, Option<f64>>(7),
                    "intervention_mgkg": r.get::<_, Option<f64>>(8),
                    "standard": r.get::<_, Option<String>>(9),
                    "ph": r.get::<_, Option<f64>>(10),
                    "ph_band": r.get::<_, Option<String>>(11),
                    "ph_assumed": r.get::<_, bool>(12),
                    "source": r.get::<_, String>(13),
                    "source_id": r.get::<_, String>(14),
                    "msg_id": r.get::<_, String>(15),
                })
            })
            .collect(),
    ))
}

/// The soil screening tier of one farmland point (view `point_soil_tiers`; soil only).
#[derive(Debug, Clone, PartialEq)]
pub struct SoilTier {
    /// Monitoring point.
    pub point_id: String,
    /// Its soil screening tier.
    pub tier: String,
    /// How many metals have a reading.
    pub metals_seen: i64,
    /// Sampling time of its newest reading.
    pub latest_sample: DateTime<Utc>,
}

/// The soil screening tier of every farmland point, by point id.
pub async fn soil_tiers(client: &Client) -> Result<Vec<SoilTier>, StoreError> {
    let rows = client
        .query(
            "SELECT point_id, soil_tier, metals_seen, latest_sample FROM point_soil_tiers
             ORDER BY point_id",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(SoilTier {
                point_id: r.try_get(0)?,
                tier: r.try_get(1)?,
                metals_seen: r.try_get(2)?,
                latest_sample: r.try_get(3)?,
            })
        })
        .collect()
}
