//! The point registry in the database.

use tokio_postgres::Client;

use super::StoreError;
use crate::domain::point::{LandUse, Point, PointType};

/// Inserts or updates points (by id) in one transaction. Returns how many were written.
pub async fn upsert(client: &mut Client, points: &[Point]) -> Result<u64, StoreError> {
    let tx = client.transaction().await?;
    let stmt = tx
        .prepare(
            "INSERT INTO points (point_id, name, county_code, lon, lat, point_type, land_use, ph)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (point_id) DO UPDATE SET
                 name = EXCLUDED.name, county_code = EXCLUDED.county_code,
                 lon = EXCLUDED.lon, lat = EXCLUDED.lat, point_type = EXCLUDED.point_type,
                 land_use = EXCLUDED.land_use, ph = EXCLUDED.ph, updated_at = now()",
        )
        .await?;
    let mut n = 0;
    for p in points {
        n += tx
            .execute(
                &stmt,
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
    tx.commit().await?;
    Ok(n)
}

/// Loads every registered point. Rows with a land use or point type this build does not know
/// are skipped (they cannot be judged) and counted in the second value.
pub async fn load(client: &Client) -> Result<(Vec<Point>, usize), StoreError> {
    let rows = client
        .query(
            "SELECT point_id, name, county_code, lon, lat, point_type, land_use, ph FROM points",
            &[],
        )
        .await?;
    let mut skipped = 0;
    let mut points = Vec::with_capacity(rows.len());
    for r in rows {
        let point_type = PointType::parse(r.get(5));
        let land_use = LandUse::parse(r.get(6));
        match (point_type, land_use) {
            (Some(point_type), Some(land_use)) => points.push(Point {
                id: r.get(0),
                name: r.get(1),
                county_code: r.get(2),
                lon: r.get(3),
                lat: r.get(4),
                point_type,
                land_use,
                ph: r.get(7),
            }),
            _ => skipped += 1,
        }
    }
    Ok((points, skipped))
}
