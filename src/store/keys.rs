//! Compact keys of the lean readings table (schema 10): the fixed codes of metals and levels,
//! and the keys of the small tables a reading refers to by id (unit spellings as sent,
//! judgement bases), found, or created the first time they are stored, inside the caller's
//! transaction.
//!
//! A batch resolves its keys with one round trip ([`Keys::for_readings`]); only a value never
//! stored before costs an insert and a second look-up. Rows are inserted only when missing
//! (never `ON CONFLICT` on every batch, which would use up an identity value each time).
//!
//! The station writer keeps the keys it resolved in a [`KeyCache`]: judgement bases are
//! append-only (a trigger refuses UPDATE and DELETE), the service role may only insert unit
//! spellings, and both were committed when resolved, so a key once found stays right for the
//! life of the process, and a batch whose bases and units are all known sends no query for
//! them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use deadpool_postgres::GenericClient;

use super::StoreError;
use crate::domain::judge::Level;
use crate::domain::metal::Metal;
use crate::domain::point::LandUse;
use crate::domain::reading::JudgedReading;
use crate::domain::standard::Thresholds;

/// The code of a metal in `readings.metal` (the `metals` table).
pub fn metal_code(m: Metal) -> i16 {
    match m {
        Metal::Pb => 1,
        Metal::Hg => 2,
        Metal::Cd => 3,
        Metal::Cr => 4,
        Metal::Cr6 => 5,
        Metal::As => 6,
        Metal::Cu => 7,
        Metal::Zn => 8,
        Metal::Ni => 9,
    }
}

/// The code of a judgement level in `readings.level` (the `levels` table).
pub fn level_code(l: Level) -> i16 {
    match l {
        Level::None => 0,
        Level::Screening => 1,
        Level::Intervention => 2,
        Level::Undeterminable => 3,
        Level::NoStandard => 4,
    }
}

/// A judgement basis as a batch knows it: the land use and the shared thresholds it was judged
/// with (`None`: no threshold for the metal on that land).
pub type Basis = (LandUse, Option<Arc<Thresholds>>);

/// Identifies a basis within one [`Keys`]: land use and the address of the shared thresholds
/// (the standards precompute every answer, so equal answers share one `Arc`; [`Keys`] holds
/// each keyed `Arc` beside its key, so an address is never reused while it is a key).
type BasisId = (LandUse, usize);

fn basis_id(land_use: LandUse, t: Option<&Arc<Thresholds>>) -> BasisId {
    (land_use, t.map_or(0, |t| Arc::as_ptr(t) as usize))
}

/// The keys of a batch's judgement bases and units.
#[derive(Debug, Default)]
pub struct Keys {
    /// Each basis's key, with its thresholds (held, see [`BasisId`]).
    bases: HashMap<BasisId, (i16, Option<Arc<Thresholds>>)>,
    units: HashMap<String, i32>,
}

impl Keys {
    /// The keys of every basis and unit of `readings` (found or created).
    pub async fn for_readings<R: Borrow<JudgedReading>>(
        client: &impl GenericClient,
        readings: impl IntoIterator<Item = R>,
    ) -> Result<Keys, StoreError> {
        Keys::for_readings_cached(client, None, readings).await
    }

    /// [`Keys::for_readings`], taking what `cache` holds from it and asking the database only
    /// for the rest, which is then added to `cache`. Give a cache only when `client` is not
    /// inside a transaction: a key created in one could be rolled back after it was cached.
    pub async fn for_readings_cached<R: Borrow<JudgedReading>>(
        client: &impl GenericClient,
        cache: Option<&KeyCache>,
        readings: impl IntoIterator<Item = R>,
    ) -> Result<Keys, StoreError> {
        let mut keys = Keys::default();
        let mut bases: HashMap<BasisId, Basis> = HashMap::new();
        let mut units: Vec<String> = Vec::new();
        {
            let known = cache.map(KeyCache::lock);
            let known = known.as_deref();
            for j in readings {
                let j = j.borrow();
                let t = j.judgement.thresholds.as_ref();
                let id = basis_id(j.land_use, t);
                if !keys.bases.contains_key(&id) && !bases.contains_key(&id) {
                    match known.and_then(|k| k.bases.get(&id)) {
                        Some(entry) => {
                            keys.bases.insert(id, entry.clone());
                        }
                        None => {
                            bases.insert(id, (j.land_use, t.cloned()));
                        }
                    }
                }
                if !keys.units.contains_key(&j.unit_orig) && !units.contains(&j.unit_orig) {
                    match known.and_then(|k| k.units.get(&j.unit_orig)) {
                        Some(&key) => {
                            keys.units.insert(j.unit_orig.clone(), key);
                        }
                        None => units.push(j.unit_orig.clone()),
                    }
                }
            }
        }
        let bases: Vec<Basis> = bases.into_values().collect();
        let found = Keys::resolve(client, &bases, &units).await?;
        if let Some(cache) = cache {
            cache.lock().absorb(&found, KeyCache::MAX_UNITS);
        }
        keys.absorb(&found, usize::MAX);
        Ok(keys)
    }

    /// Adds every key of `other` (unit spellings while fewer than `max_units` are held).
    fn absorb(&mut self, other: &Keys, max_units: usize) {
        for (id, entry) in &other.bases {
            self.bases.insert(*id, entry.clone());
        }
        for (spelling, key) in &other.units {
            if self.units.len() < max_units {
                self.units.insert(spelling.clone(), *key);
            }
        }
    }

    /// The keys of `bases` and `units` (found or created).
    pub async fn resolve(
        client: &impl GenericClient,
        bases: &[Basis],
        units: &[String],
    ) -> Result<Keys, StoreError> {
        let mut keys = Keys::default();
        let (b, u) = tokio::join!(find_bases(client, bases), find_units(client, units));
        let (b, u) = (b?, u?);
        let b = if b.iter().any(Option::is_none) {
            insert_bases(client, bases).await?;
            find_bases(client, bases).await?
        } else {
            b
        };
        let u = if u.iter().any(Option::is_none) {
            insert_units(client, units).await?;
            find_units(client, units).await?
        } else {
            u
        };
        for ((land_use, t), key) in bases.iter().zip(b) {
            let key = key.ok_or_else(|| StoreError::Keys("a judgement basis".into()))?;
            keys.bases
                .insert(basis_id(*land_use, t.as_ref()), (key, t.clone()));
        }
        for (spelling, key) in units.iter().zip(u) {
            let key = key.ok_or_else(|| StoreError::Keys(format!("unit {spelling:?}")))?;
            keys.units.insert(spelling.clone(), key);
        }
        Ok(keys)
    }

    /// The basis key of a judged reading, if resolved.
    pub fn basis_of(&self, j: &JudgedReading) -> Option<i16> {
        self.basis(j.land_use, j.judgement.thresholds.as_ref())
    }

    /// The key of a basis, if resolved.
    pub fn basis(&self, land_use: LandUse, t: Option<&Arc<Thresholds>>) -> Option<i16> {
        self.bases.get(&basis_id(land_use, t)).map(|(key, _)| *key)
    }

    /// The code of a unit spelling, if resolved.
    pub fn unit(&self, spelling: &str) -> Option<i32> {
        self.units.get(spelling).copied()
    }
}

/// The judgement basis and unit keys a writer has resolved outside any transaction (see the
/// module docs). The bases are the standards' shared answers, so their number is bounded by
/// the standards; unit spellings come from input and are kept up to [`KeyCache::MAX_UNITS`].
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<Keys>,
}

impl KeyCache {
    /// Most unit spellings kept (more are looked up each time).
    pub const MAX_UNITS: usize = 256;

    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keys a batch of station samples refers to: its stations' `sources` rows (created,
/// and committed at once, the first time a station sends, like the dimension rows of
/// [`Keys`]), its points' keys, and a fresh `sample_key` for each sample, drawn from the
/// samples' own sequence so that the writer can copy them. One round trip; a new station
/// costs an insert and a second look-up.
#[derive(Debug, Default)]
pub(crate) struct SampleKeys {
    stations: HashMap<String, i32>,
    points: HashMap<String, i32>,
    /// Unused sample keys, in ascending order.
    fresh: Vec<i64>,
}

impl SampleKeys {
    /// The keys of `stations` and `points` (each may repeat) and `samples` fresh sample keys.
    pub(crate) async fn resolve(
        client: &impl GenericClient,
        stations: &[&str],
        points: &[&str],
        samples: usize,
    ) -> Result<SampleKeys, StoreError> {
        let (found, points, fresh) = tokio::join!(
            find_by_id(client, FIND_STATIONS, stations),
            find_by_id(client, FIND_POINTS, points),
            draw_sample_keys(client, samples)
        );
        let mut found = found?;
        if stations.iter().any(|s| !found.contains_key(*s)) {
            client
                .execute(
                    "INSERT INTO sources (source, source_id)
                     SELECT DISTINCT 'station', k.station FROM unnest($1::text[]) AS k(station)
                     WHERE NOT EXISTS (SELECT 1 FROM sources so
                                       WHERE so.source = 'station' AND so.source_id = k.station)
                     ON CONFLICT DO NOTHING",
                    &[&stations],
                )
                .await?;
            found = find_by_id(client, FIND_STATIONS, stations).await?;
        }
        Ok(SampleKeys {
            stations: found,
            points: points?,
            fresh: fresh?,
        })
    }

    /// The `sources.source_key` of a station, if resolved.
    pub(crate) fn station(&self, station_id: &str) -> Option<i32> {
        self.stations.get(station_id).copied()
    }

    /// The `points.point_key` of a point, if it is stored.
    pub(crate) fn point(&self, point_id: &str) -> Option<i32> {
        self.points.get(point_id).copied()
    }

    /// The fresh sample keys, in ascending order, one per sample asked for.
    pub(crate) fn fresh(&self) -> &[i64] {
        &self.fresh
    }
}

const FIND_STATIONS: &str = "SELECT k.id, so.source_key FROM unnest($1::text[]) AS k(id)
                             JOIN sources so ON so.source = 'station' AND so.source_id = k.id";
const FIND_POINTS: &str = "SELECT k.id, p.point_key FROM unnest($1::text[]) AS k(id)
                           JOIN points p ON p.point_id = k.id";

/// The key of each of `ids` that `select` (id, key for `$1::text[]`) finds.
async fn find_by_id(
    client: &impl GenericClient,
    select: &str,
    ids: &[&str],
) -> Result<HashMap<String, i32>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let stmt = client.prepare_cached(select).await?;
    Ok(client
        .query(&stmt, &[&ids])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// `n` new values of `samples.sample_key`'s sequence, ascending (a value drawn and never used
/// is a gap, as after any rolled-back insert).
async fn draw_sample_keys(client: &impl GenericClient, n: usize) -> Result<Vec<i64>, StoreError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i32::try_from(n).map_err(|_| StoreError::Keys(format!("{n} sample keys")))?;
    let stmt = client
        .prepare_cached(
            // The identity's sequence by name: resolved once, when the statement is
            // prepared (`pg_get_serial_sequence` would be called for every row).
            "SELECT nextval('samples_sample_key_seq') FROM generate_series(1, $1::int4)",
        )
        .await?;
    let mut keys: Vec<i64> = client
        .query(&stmt, &[&n])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    keys.sort_unstable();
    Ok(keys)
}

/// The columns of `judgement_bases` as arrays, in the order of [`BASIS_UNNEST`].
struct BasisColumns<'a> {
    land_use: Vec<&'static str>,
    standard_id: Vec<Option<&'a str>>,
    standard_version: Vec<Option<&'a str>>,
    column: Vec<Option<&'a str>>,
    screening: Vec<Option<f64>>,
    screening_source: Vec<Option<&'a str>>,
    intervention: Vec<Option<f64>>,
    intervention_source: Vec<Option<&'a str>>,
    ph_band: Vec<Option<String>>,
    ph_assumed: Vec<bool>,
}

impl<'a> BasisColumns<'a> {
    fn of(bases: &'a [Basis]) -> BasisColumns<'a> {
        let t = |b: &'a Basis| b.1.as_deref();
        BasisColumns {
            land_use: bases.iter().map(|b| b.0.as_str()).collect(),
            standard_id: bases
                .iter()
                .map(|b| t(b).map(|t| t.standard_id.as_str()))
                .collect(),
            standard_version: bases
                .iter()
                .map(|b| t(b).map(|t| t.standard_version.as_str()))
                .collect(),
            column: bases
                .iter()
                .map(|b| t(b).map(|t| t.column.as_str()))
                .collect(),
            screening: bases.iter().map(|b| t(b).map(|t| t.screening)).collect(),
            screening_source: bases
                .iter()
                .map(|b| t(b).map(|t| t.screening_source.as_str()))
                .collect(),
            intervention: bases
                .iter()
                .map(|b| t(b).and_then(|t| t.intervention))
                .collect(),
            intervention_source: bases
                .iter()
                .map(|b| t(b).and_then(|t| t.intervention_source.as_deref()))
                .collect(),
            ph_band: bases
                .iter()
                .map(|b| t(b).and_then(|t| t.ph_band).map(|p| p.to_string()))
                .collect(),
            ph_assumed: bases
                .iter()
                .map(|b| t(b).is_some_and(|t| t.ph_assumed))
                .collect(),
        }
    }

    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 10] {
        [
            &self.land_use,
            &self.standard_id,
            &self.standard_version,
            &self.column,
            &self.screening,
            &self.screening_source,
            &self.intervention,
            &self.intervention_source,
            &self.ph_band,
            &self.ph_assumed,
        ]
    }
}

/// The bases `$1`…`$10` as rows `k`.
const BASIS_UNNEST: &str = "unnest($1::text[], $2::text[], $3::text[], $4::text[],
        $5::float8[], $6::text[], $7::float8[], $8::text[], $9::text[], $10::bool[])
        WITH ORDINALITY AS k(land_use, standard_id, standard_version, threshold_column,
            screening_mgkg, screening_source, intervention_mgkg, intervention_source,
            ph_band, ph_assumed, i)";

/// A stored basis `b` equal to the row `k` in every field.
const BASIS_EQUALS: &str = "b.land_use = k.land_use
        AND b.standard_id IS NOT DISTINCT FROM k.standard_id
        AND b.standard_version IS NOT DISTINCT FROM k.standard_version
        AND b.threshold_column IS NOT DISTINCT FROM k.threshold_column
        AND b.screening_mgkg IS NOT DISTINCT FROM k.screening_mgkg
        AND b.screening_source IS NOT DISTINCT FROM k.screening_source
        AND b.intervention_mgkg IS NOT DISTINCT FROM k.intervention_mgkg
        AND b.intervention_source IS NOT DISTINCT FROM k.intervention_source
        AND b.ph_band IS NOT DISTINCT FROM k.ph_band
        AND b.ph_assumed = k.ph_assumed";

/// The stored key of each basis, in order (`None`: not stored yet).
async fn find_bases(
    client: &impl GenericClient,
    bases: &[Basis],
) -> Result<Vec<Option<i16>>, StoreError> {
    if bases.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = client
        .prepare_cached(&format!(
            "SELECT k.i, b.basis_key FROM {BASIS_UNNEST} JOIN judgement_bases b ON {BASIS_EQUALS}"
        ))
        .await?;
    let cols = BasisColumns::of(bases);
    let mut out = vec![None; bases.len()];
    for r in client.query(&stmt, &cols.params()).await? {
        let i: i64 = r.get(0);
        if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(r.get(1));
        }
    }
    Ok(out)
}

/// Stores the bases not stored yet (a concurrent writer storing one too is waited for).
async fn insert_bases(client: &impl GenericClient, bases: &[Basis]) -> Result<(), StoreError> {
    let stmt = client
        .prepare_cached(&format!(
            "INSERT INTO judgement_bases (land_use, standard_id, standard_version,
                 threshold_column, screening_mgkg, screening_source, intervention_mgkg,
                 intervention_source, ph_band, ph_assumed)
             SELECT k.land_use, k.standard_id, k.standard_version, k.threshold_column,
                    k.screening_mgkg, k.screening_source, k.intervention_mgkg,
                    k.intervention_source, k.ph_band, k.ph_assumed
             FROM {BASIS_UNNEST}
             WHERE NOT EXISTS (SELECT 1 FROM judgement_bases b WHERE {BASIS_EQUALS})
             ORDER BY k.i
             ON CONFLICT DO NOTHING"
        ))
        .await?;
    let cols = BasisColumns::of(bases);
    client.execute(&stmt, &cols.params()).await?;
    Ok(())
}

/// The stored code of each unit spelling, in order (`None`: not stored yet).
async fn find_units(
    client: &impl GenericClient,
    units: &[String],
) -> Result<Vec<Option<i32>>, StoreError> {
    if units.is_empty() {
        return Ok(Vec::new());
    }
    let stmt = client
        .prepare_cached(
            "SELECT k.i, u.unit FROM unnest($1::text[]) WITH ORDINALITY AS k(spelling, i)
             JOIN units u ON u.spelling = k.spelling",
        )
        .await?;
    let mut out = vec![None; units.len()];
    for r in client.query(&stmt, &[&units]).await? {
        let i: i64 = r.get(0);
        if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(r.get(1));
        }
    }
    Ok(out)
}

/// Stores the unit spellings not stored yet.
async fn insert_units(client: &impl GenericClient, units: &[String]) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO units (spelling)
             SELECT k.spelling FROM unnest($1::text[]) WITH ORDINALITY AS k(spelling, i)
             WHERE NOT EXISTS (SELECT 1 FROM units u WHERE u.spelling = k.spelling)
             ORDER BY k.i
             ON CONFLICT DO NOTHING",
            &[&units],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes are those the migration's `metals` and `levels` tables hold.
    #[test]
    fn codes_match_the_code_tables() {
        let metals = [
            (1, "Pb"),
            (2, "Hg"),
            (3, "Cd"),
            (4, "Cr"),
            (5, "Cr6"),
            (6, "As"),
            (7, "Cu"),
            (8, "Zn"),
            (9, "Ni"),
        ];
        for m in Metal::ALL {
            let code = metal_code(m);
            assert!(metals.contains(&(code, m.symbol())), "{m:?} -> {code}");
        }
        let levels = [
            (0, "none"),
            (1, "screening"),
            (2, "intervention"),
            (3, "undeterminable"),
            (4, "no_standard"),
        ];
        for l in [
            Level::None,
            Level::Screening,
            Level::Intervention,
            Level::Undeterminable,
            Level::NoStandard,
        ] {
            assert!(levels.contains(&(level_code(l), l.as_str())), "{l:?}");
        }
        let sql = include_str!("migrations/0010_lean_storage.sql");
        for (code, symbol) in metals {
            assert!(sql.contains(&format!("({code}, '{symbol}')")), "{symbol}");
        }
        for (code, name) in levels {
            assert!(sql.contains(&format!("({code}, '{name}')")), "{name}");
        }
    }
}
