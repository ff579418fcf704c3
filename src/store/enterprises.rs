//! The key supervised enterprise registry: enterprises by credit code and their points, their
//! own results, and what the public disclosure page publishes of them.

use deadpool_postgres::{Client, GenericClient};
use serde::Serialize;
use serde_json::{json, Value};

use super::StoreError;
use crate::domain::enterprise::Enterprise;

/// Inserts or updates enterprises and replaces their point lists, in one transaction.
pub async fn upsert(client: &mut Client, list: &[Enterprise]) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    for e in list {
        tx.execute(
            "INSERT INTO enterprises (credit_code, name, industry, county_code, lon, lat)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (credit_code) DO UPDATE SET name = EXCLUDED.name,
                 industry = EXCLUDED.industry, county_code = EXCLUDED.county_code,
                 lon = EXCLUDED.lon, lat = EXCLUDED.lat, updated_at = now()",
            &[
                &e.credit_code,
                &e.name,
                &e.industry,
                &e.county_code,
                &e.lon,
                &e.lat,
            ],
        )
        .await?;
        tx.execute(
            "DELETE FROM enterprise_points WHERE credit_code = $1",
            &[&e.credit_code],
        )
        .await?;
        tx.execute(
            "INSERT INTO enterprise_points (credit_code, point_id)
             SELECT $1, p FROM unnest($2::text[]) AS p",
            &[&e.credit_code, &e.points],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(list.len() as u64)
}

/// The points of the enterprise with this credit code (empty when it is not registered).
pub async fn points_of(client: &Client, credit_code: &str) -> Result<Vec<String>, StoreError> {
    let rows = client
        .query(
            "SELECT point_id FROM enterprise_points WHERE credit_code = $1 ORDER BY point_id",
            &[&credit_code],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every enterprise with its points, for listing.
pub async fn list(client: &Client) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT e.credit_code, e.name, e.industry, e.county_code, e.lon, e.lat,
                    COALESCE(array_agg(p.point_id ORDER BY p.point_id)
                             FILTER (WHERE p.point_id IS NOT NULL), '{}')
             FROM enterprises e LEFT JOIN enterprise_points p USING (credit_code)
             GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY e.county_code, e.credit_code",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "credit_code": r.get::<_, String>(0),
                "name": r.get::<_, String>(1),
                "industry": r.get::<_, String>(2),
                "county_code": r.get::<_, String>(3),
                "lon": r.get::<_, f64>(4),
                "lat": r.get::<_, f64>(5),
                "points": r.get::<_, Vec<String>>(6),
            })
        })
        .collect())
}

/// The latest readings of an enterprise's own points (newest first), through
/// `readings_full`.
pub async fn own_readings(
    client: &Client,
    credit_code: &str,
    limit: i64,
) -> Result<Vec<Value>, StoreError> {
    let rows = client
        .query(
            "SELECT r.point_id, r.metal, r.sampled_at, r.value_mgkg, r.level, r.source,
                    r.source_id, r.msg_id, r.standard_id
             FROM readings_full r
             JOIN enterprise_points p ON p.point_id = r.point_id AND p.credit_code = $1
             ORDER BY r.sampled_at DESC LIMIT $2",
            &[&credit_code, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            json!({
                "point_id": r.get::<_, String>(0),
                "metal": r.get::<_, String>(1),
                "sampled_at": r.get::<_, chrono::DateTime<chrono::Utc>>(2),
                "value_mgkg": r.get::<_, f64>(3),
                "level": r.get::<_, String>(4),
                "source": r.get::<_, String>(5),
                "source_id": r.get::<_, String>(6),
                "msg_id": r.get::<_, String>(7),
                "standard": r.get::<_, Option<String>>(8),
            })
        })
        .collect())
}

/// One enterprise on the public disclosure page (action plan §28: each key supervised
/// enterprise monitors its own land every year and the results are published): its latest
/// self-monitoring campaign and whether it exceeded. Self-monitoring results are the lab
/// results of its own points in batches its own `enterprise` token uploaded.
#[derive(Debug, Clone, Serialize)]
pub struct Disclosure {
    /// Unified social credit code.
    pub credit_code: String,
    /// Name.
    pub name: String,
    /// Industry.
    pub industry: String,
    /// County code.
    pub county_code: String,
    /// Its points.
    pub points: i64,
    /// The latest self-monitoring campaign (sampling year, UTC+8); `None`: none published.
    pub latest_year: Option<String>,
    /// Samples of that campaign.
    pub samples: i64,
    /// Whether a result of that campaign is above the screening value.
    pub exceeded: bool,
    /// The worst level of that campaign (`none`, `screening`, `intervention`; `None`
    /// without results).
    pub worst_level: Option<String>,
}

/// The disclosure rows of the enterprises of `county` (every county when `None`).
pub async fn disclosure(
    client: &impl GenericClient,
    county: Option<&str>,
) -> Result<Vec<Disclosure>, StoreError> {
    let rows = client
        .query(
            "WITH own AS (
                 SELECT p.credit_code, r.msg_id, r.level,
                        to_char(r.sampled_at AT TIME ZONE 'Asia/Shanghai', 'YYYY') AS y
                 FROM enterprise_points p
                 JOIN LATERAL (
                     SELECT r.msg_id, r.level, r.sampled_at, r.source_id
                     FROM readings_full r
                     WHERE r.point_id = p.point_id AND r.source = 'lab'
                 ) r ON true
                 JOIN lab_batches b ON b.batch_id = r.source_id
                                   AND b.uploaded_by = p.credit_code
             ), latest AS (
                 SELECT credit_code, max(y) AS y FROM own GROUP BY credit_code
             )
             SELECT e.credit_code, e.name, e.industry, e.county_code,
                    (SELECT count(*) FROM enterprise_points ep
                     WHERE ep.credit_code = e.credit_code),
                    l.y,
                    count(DISTINCT o.msg_id) FILTER (WHERE o.y = l.y),
                    CASE WHEN l.y IS NULL THEN NULL
                         WHEN bool_or(o.level = 'intervention') FILTER (WHERE o.y = l.y)
                              THEN 'intervention'
                         WHEN bool_or(o.level = 'screening') FILTER (WHERE o.y = l.y)
                              THEN 'screening'
                         ELSE 'none' END
             FROM enterprises e
             LEFT JOIN latest l ON l.credit_code = e.credit_code
             LEFT JOIN own o ON o.credit_code = e.credit_code
             WHERE $1::text IS NULL OR e.county_code = $1
             GROUP BY e.credit_code, e.name, e.industry, e.county_code, l.y
             ORDER BY e.county_code, e.credit_code",
            &[&county],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let worst: Option<String> = r.get(7);
            Disclosure {
                credit_code: r.get(0),
                name: r.get(1),
                industry: r.get(2),
                county_code: r.get(3),
                points: r.get(4),
                latest_year: r.get(5),
                samples: r.get(6),
                exceeded: matches!(worst.as_deref(), Some("screening" | "intervention")),
                worst_level: worst,
            }
        })
        .collect())
}
