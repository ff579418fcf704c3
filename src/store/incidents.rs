//! Incident state handling inside the caller's transaction: judged readings (station
//! batches and lab uploads alike) are applied to the incident tracks in sampling order
//! ([`crate::domain::incident`] decides), incident history is recorded and one alert event
//! per state change is queued in the outbox ([`super::outbox`]). A late exceeding sample
//! (older than the newest one applied to its pair) queues a `late_exceedance` event of its
//! own and changes no incident and no track. Redelivered messages and replayed lab batches
//! never get here (their idempotency keys absorb them first), so each is raised once.
//!
//! The station writer keeps the tracks it committed in memory ([`TrackCache`], in
//! `incidents/cache.rs`), so a batch reads from the database only pairs it has not seen.

mod cache;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use tokio_postgres::Statement;
use uuid::Uuid;

use super::outbox;
use super::StoreError;
use crate::config::MqttConfig;
use crate::domain::incident::{self, Active, Change, LateExceedance, Track, Transition};
use crate::domain::judge::Level;
use crate::domain::metal::Metal;
use crate::domain::reading::{JudgedReading, Source};
use cache::KeptTracks;
pub use cache::TrackCache;

fn level_from(text: Option<&str>) -> Level {
    match text {
        Some("intervention") => Level::Intervention,
        _ => Level::Screening,
    }
}

/// What the incident tracks need of a reading (see [`apply_incidents_by`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IncidentKey<'a> {
    /// Monitoring point.
    pub(crate) point_id: &'a str,
    /// Analyte.
    pub(crate) metal: Metal,
    /// Sampling time.
    pub(crate) sampled_at: DateTime<Utc>,
    /// Judgement level.
    pub(crate) level: Level,
}

/// Applies readings to the incident tracks in `sampled_at` order, records incident history
/// and writes one outbox event per state change or late exceedance (see
/// [`apply_incidents_by`]).
pub(crate) async fn apply_incidents<'k>(
    tx: &Transaction<'_>,
    mqtt: &MqttConfig,
    clear_after: u32,
    rows: &'k [JudgedReading],
    kept: Option<&TrackCache>,
) -> Result<Applied<'k>, StoreError> {
    let keys: Vec<IncidentKey<'_>> = rows
        .iter()
        .map(|j| IncidentKey {
            point_id: &j.point_id,
            metal: j.metal,
            sampled_at: j.sampled_at,
            level: j.judgement.level,
        })
        .collect();
    apply_incidents_by(
        tx,
        mqtt,
        clear_after,
        &keys,
        |i| Cow::Borrowed(&rows[i]),
        kept,
    )
    .await
}

/// Transaction-level advisory lock every writer of the incident tracks takes first (station
/// batches and lab uploads): a pair with no open incident has no row to lock, so two writers
/// opening the same incident would otherwise both succeed. Taken before the archive head
/// lock, like every other lock (see `store::archive`).
pub(crate) const INCIDENT_LOCK: i64 = 0x501_1306;

/// What [`apply_incidents_by`] did (borrowing the point ids of its keys).
#[derive(Debug, Default)]
pub(crate) struct Applied<'k> {
    /// Alert events written to the outbox.
    pub(crate) events: usize,
    /// Pairs whose open tracks were read from the database (all of them without a cache).
    pub(crate) tracks_read: usize,
    /// The tracks to keep in the writer's [`TrackCache`] once the transaction has committed
    /// (`None` when no cache was given or no reading was applied).
    pub(crate) kept: Option<KeptTracks<'k>>,
}

/// [`apply_incidents`] over the keys of the readings; `reading(i)` makes the full reading of
/// `keys[i]`, needed only for a state change (its alert event), so a large batch is never held
/// as a list of judged readings.
///
/// The keys' readings must already be in `readings` (this transaction inserted them). Only
/// pairs with an open incident have state in `incident_tracks`; for a pair without one that
/// has an exceedance here, the newest earlier sample time is read from `readings` (see
/// [`newest_earlier`]), so a late, older exceedance is seen as late (and alerted as such)
/// exactly as if every sample had been kept in the track.
///
/// With `kept`, the writer's own [`TrackCache`], a pair whose committed state the cache holds
/// is not read from the database at all: under the incident lock the transaction draws the
/// next `incident_epoch`, and the cache answers only when that is the value right after the
/// one of its last commit (nobody else applied readings in between).
pub(crate) async fn apply_incidents_by<'r, 'k>(
    tx: &Transaction<'_>,
    mqtt: &MqttConfig,
    clear_after: u32,
    keys: &[IncidentKey<'k>],
    reading: impl Fn(usize) -> Cow<'r, JudgedReading>,
    kept: Option<&TrackCache>,
) -> Result<Applied<'k>, StoreError> {
    if keys.is_empty() {
        return Ok(Applied::default());
    }
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    let draw = tx
        .prepare_cached("SELECT nextval('incident_epoch')")
        .await?;
    // Sent together: the server runs the lock first, and the draw waits behind it.
    let (locked, drawn) = tokio::join!(
        tx.execute(&lock, &[&INCIDENT_LOCK]),
        tx.query_one(&draw, &[])
    );
    locked?;
    let epoch: i64 = drawn?.get(0);
    let mut tracks = HashMap::new();
    let unknown = match kept {
        Some(cache) => cache.begin(epoch, keys, &mut tracks),
        None => keys.to_vec(),
    };
    let tracks_read = distinct_pairs(&unknown);
    if !unknown.is_empty() {
        tracks.extend(open_tracks(tx, &unknown).await?);
    }
    // Pairs whose state is written back: those with an open incident whose track this batch
    // moved (found after the loop, against their state now), and those it opened or changed.
    let open_before: Vec<((&str, &str), Track)> = tracks
        .iter()
        .filter(|(_, t)| t.active.is_some())
        .map(|(k, t)| (*k, t.clone()))
        .collect();
    let mut touched: HashSet<(&str, &str)> = HashSet::new();
    // Only pairs with an exceedance here and no track (unknown or idle) are read.
    for (key, last) in newest_earlier(tx, keys, &tracks).await? {
        tracks.insert(
            key,
            Track {
                last_sampled_at: last,
                active: None,
            },
        );
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|i| keys[*i].sampled_at);

    let mut log = ChangeLog::default();
    for i in order {
        let k = &keys[i];
        let key = (k.point_id, k.metal.symbol());
        let prev = tracks.get(&key);
        if prev.is_none() && !k.level.exceeds() {
            // No open incident, no earlier exceedance here: nothing can change.
            continue;
        }
        if let Some(late) = incident::late(prev, k.sampled_at, k.level) {
            // Alerted on its own; the track and the incident stay as they are.
            log.record_late(mqtt, &reading(i), &late)?;
            continue;
        }
        let (next, change) =
            incident::apply(prev, k.sampled_at, k.level, clear_after, Uuid::now_v7);
        if let Some(change) = change {
            log.record(mqtt, &reading(i), &change)?;
            touched.insert(key);
        }
        tracks.insert(key, next);
    }
    // An open pair's late readings leave its track as it was: nothing to write back.
    touched.extend(
        open_before
            .into_iter()
            .filter(|(key, before)| tracks.get(key) != Some(before))
            .map(|(key, _)| key),
    );
    // The incident history, the alert events and the tracks go out together (one round
    // trip): none of these statements reads what another writes.
    let (events, written) = tokio::join!(log.write(tx), write_tracks(tx, &touched, &tracks));
    let events = events?;
    written?;
    Ok(Applied {
        events,
        tracks_read,
        kept: kept.map(|_| KeptTracks::of(epoch, keys, tracks)),
    })
}

/// How many (point, metal) pairs `keys` name.
fn distinct_pairs(keys: &[IncidentKey<'_>]) -> usize {
    let pairs: HashSet<(&str, Metal)> = keys.iter().map(|k| (k.point_id, k.metal)).collect();
    pairs.len()
}

/// Writes back the state of the `touched` pairs' tracks.
async fn write_tracks(
    tx: &Transaction<'_>,
    touched: &HashSet<(&str, &str)>,
    tracks: &HashMap<(&str, &'static str), Track>,
) -> Result<(), StoreError> {
    let mut points = Vec::new();
    let mut metals = Vec::new();
    let mut last = Vec::new();
    let mut ids = Vec::new();
    let mut levels = Vec::new();
    let mut streaks = Vec::new();
    for (key, t) in touched.iter().filter_map(|k| tracks.get_key_value(k)) {
        points.push(key.0);
        metals.push(key.1);
        last.push(t.last_sampled_at);
        ids.push(t.active.as_ref().map(|a| a.incident_id));
        levels.push(t.active.as_ref().map(|a| a.level.as_str()));
        streaks.push(t.active.as_ref().map_or(0, |a| a.ok_streak as i32));
    }
    if points.is_empty() {
        return Ok(());
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
    Ok(())
}

/// The tracks with an open incident among the keys' pairs, keyed by strings borrowed from
/// the keys.
async fn open_tracks<'k>(
    tx: &Transaction<'_>,
    keys: &[IncidentKey<'k>],
) -> Result<HashMap<(&'k str, &'static str), Track>, StoreError> {
    let pairs: HashSet<(&'k str, &'static str)> = keys
        .iter()
        .map(|k| (k.point_id, k.metal.symbol()))
        .collect();
    let points: Vec<&str> = pairs
        .iter()
        .map(|p| p.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let select = tx
        .prepare_cached(
            "SELECT point_id, metal, last_sampled_at, incident_id, level, ok_streak
             FROM incident_tracks
             WHERE incident_id IS NOT NULL AND point_id = ANY($1::text[])",
        )
        .await?;
    // Mapped back to the keys' own strings (the row's die with it): by hash, not by a scan
    // of the pairs per row (a batch has thousands of pairs).
    let own_points: HashSet<&'k str> = pairs.iter().map(|p| p.0).collect();
    let mut tracks = HashMap::new();
    for r in tx.query(&select, &[&points]).await? {
        let (point, metal): (&str, &str) = (r.get(0), r.get(1));
        let (Some(&point), Some(metal)) = (own_points.get(point), Metal::parse(metal)) else {
            continue;
        };
        let key = (point, metal.symbol());
        if !pairs.contains(&key) {
            continue;
        }
        let incident_id: Uuid = r.get(3);
        let ok_streak: i32 = r.get(5);
        tracks.insert(
            key,
            Track {
                last_sampled_at: r.get(2),
                active: Some(Active {
                    incident_id,
                    level: level_from(r.get(4)),
                    ok_streak: u32::try_from(ok_streak).unwrap_or(0),
                }),
            },
        );
    }
    Ok(tracks)
}

/// For each pair without a track in `known` (no open one in the database, none kept by the
/// writer's cache) that has an exceedance among the keys: the newest sample time of the pair
/// stored before this batch, if it is later than the pair's earliest
/// exceedance here (an earlier one cannot make any of them stale).
///
/// `readings` already holds this batch's own samples. So for each pair, with `n` of its
/// samples in this batch later than that exceedance, the newest `n + 1` later times are read
/// (with ties; an index scan, however long the pair's history) and the batch's times matched
/// off, one for one: at most `n` of them are the batch's, so what is left, if anything,
/// includes the newest earlier sample.
async fn newest_earlier<'k>(
    tx: &Transaction<'_>,
    keys: &[IncidentKey<'k>],
    known: &HashMap<(&'k str, &'static str), Track>,
) -> Result<Vec<((&'k str, &'static str), DateTime<Utc>)>, StoreError> {
    let mut first: BTreeMap<(&'k str, &'static str), DateTime<Utc>> = BTreeMap::new();
    for k in keys.iter().filter(|k| k.level.exceeds()) {
        let key = (k.point_id, k.metal.symbol());
        if !known.contains_key(&key) {
            let t = first.entry(key).or_insert(k.sampled_at);
            *t = (*t).min(k.sampled_at);
        }
    }
    if first.is_empty() {
        return Ok(Vec::new());
    }
    // This batch's own times of those pairs, later than the pair's earliest exceedance.
    let mut own: HashMap<(&'k str, &'static str), Vec<DateTime<Utc>>> = HashMap::new();
    for k in keys {
        let key = (k.point_id, k.metal.symbol());
        if first.get(&key).is_some_and(|since| k.sampled_at > *since) {
            own.entry(key).or_default().push(k.sampled_at);
        }
    }
    let pairs: Vec<(&'k str, &'static str)> = first.keys().copied().collect();
    let points: Vec<&str> = pairs.iter().map(|k| k.0).collect();
    let metals: Vec<&str> = pairs.iter().map(|k| k.1).collect();
    let since: Vec<DateTime<Utc>> = first.values().copied().collect();
    let take: Vec<i64> = pairs
        .iter()
        .map(|k| own.get(k).map_or(0, Vec::len) as i64 + 1)
        .collect();
    let select = tx
        .prepare_cached(
            "SELECT k.i, r.sampled_at
             FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int8[]) WITH ORDINALITY
                  AS k(point_id, metal, since, take, i)
             JOIN points p ON p.point_id = k.point_id
             JOIN metals m ON m.symbol = k.metal
             CROSS JOIN LATERAL (
                 SELECT sampled_at FROM readings
                 WHERE point_key = p.point_key AND metal = m.metal AND sampled_at > k.since
                 ORDER BY sampled_at DESC
                 FETCH FIRST (k.take) ROWS WITH TIES) r",
        )
        .await?;
    // TimescaleDB's runtime chunk exclusion re-checks every chunk's constraints for each
    // pair (each rescan of the lateral subquery); the ordered index scans stop at the first
    // rows anyway. Off for the rest of this transaction (it changes plans, never answers):
    // 5.3 ms → 1.9 ms for 260 pairs over five chunks (EXPLAIN ANALYZE, docs/performance.md).
    let params: [&(dyn ToSql + Sync); 4] = [&points, &metals, &since, &take];
    let (plain, rows) = tokio::join!(
        tx.batch_execute("SET LOCAL timescaledb.enable_runtime_exclusion = off"),
        tx.query(&select, &params)
    );
    plain?;
    let mut found: HashMap<(&'k str, &'static str), Vec<DateTime<Utc>>> = HashMap::new();
    for r in rows? {
        let i: i64 = r.get(0);
        let Some(key) = usize::try_from(i - 1).ok().and_then(|i| pairs.get(i)) else {
            continue;
        };
        found.entry(*key).or_default().push(r.get(1));
    }
    Ok(found
        .into_iter()
        .filter_map(|(key, mut times)| {
            for t in own.get(&key).into_iter().flatten() {
                if let Some(pos) = times.iter().position(|x| x == t) {
                    times.swap_remove(pos);
                }
            }
            times.into_iter().max().map(|last| (key, last))
        })
        .collect())
}

/// An incident row as a batch's state changes leave it.
struct IncidentRow {
    incident_id: Uuid,
    /// Opened in this batch (inserted), else updated.
    opened: bool,
    point_id: String,
    metal: &'static str,
    county: String,
    /// `None`: unchanged (an incident opened earlier).
    state: Option<&'static str>,
    /// `None`: unchanged.
    level: Option<&'static str>,
    opened_sampled_at: DateTime<Utc>,
    updated_sampled_at: DateTime<Utc>,
    cleared_sampled_at: Option<DateTime<Utc>>,
}

/// The incident history and the outbox events of one batch's state changes and late
/// exceedances, gathered in order and written in at most three statements however many there are.
#[derive(Default)]
struct ChangeLog {
    incidents: Vec<IncidentRow>,
    by_id: HashMap<Uuid, usize>,
    /// The alert events, payloads serialised, in order.
    events: Vec<outbox::NewAlert>,
}

/// The payload of an alert event (`soil/v1/alerts/…`, the outbox's `payload`): the reading,
/// its judgement with the thresholds and their sources, and the incident it concerns.
/// Serialised straight from the reading's fields, with no intermediate `serde_json::Value`;
/// the outbox keeps the text as it is (`json`, schema 27), so subscribers receive the keys
/// in the order of these fields.
#[derive(Debug, Serialize)]
struct AlertEvent<'a> {
    event_id: Uuid,
    incident_id: Option<Uuid>,
    state: &'a str,
    level: &'a str,
    point_id: &'a str,
    county_code: &'a str,
    metal: &'static str,
    value_mgkg: f64,
    value_orig: f64,
    unit_orig: &'a str,
    detected: bool,
    reading_level: &'static str,
    screening_mgkg: Option<f64>,
    intervention_mgkg: Option<f64>,
    standard: Option<&'a str>,
    standard_version: Option<&'a str>,
    screening_source: Option<&'a str>,
    intervention_source: Option<&'a str>,
    threshold_column: Option<&'a str>,
    land_use: &'static str,
    ph: Option<f64>,
    ph_band: Option<String>,
    ph_assumed: bool,
    sampled_at: DateTime<Utc>,
    msg_id: &'a str,
    source: &'static str,
    source_id: &'a str,
    station_id: Option<&'a str>,
    /// Only in a `late_exceedance`: the newer sample of the pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    newer_sampled_at: Option<DateTime<Utc>>,
}

impl<'a> AlertEvent<'a> {
    /// The event `state` (at `level`) about reading `j`, with a new event id.
    fn of(
        j: &'a JudgedReading,
        incident_id: Option<Uuid>,
        state: &'a str,
        level: &'a str,
    ) -> AlertEvent<'a> {
        let t = j.judgement.thresholds.as_ref();
        AlertEvent {
            event_id: Uuid::now_v7(),
            incident_id,
            state,
            level,
            point_id: &j.point_id,
            county_code: &j.county,
            metal: j.metal.symbol(),
            value_mgkg: j.value_mgkg,
            value_orig: j.value_orig,
            unit_orig: &j.unit_orig,
            detected: j.detected,
            reading_level: j.judgement.level.as_str(),
            screening_mgkg: t.map(|t| t.screening),
            intervention_mgkg: t.and_then(|t| t.intervention),
            standard: t.map(|t| t.standard_id.as_str()),
            standard_version: t.map(|t| t.standard_version.as_str()),
            screening_source: t.map(|t| t.screening_source.as_str()),
            intervention_source: t.and_then(|t| t.intervention_source.as_deref()),
            threshold_column: t.map(|t| t.column.as_str()),
            land_use: j.land_use.as_str(),
            ph: j.ph,
            ph_band: t.and_then(|t| t.ph_band).map(|b| b.to_string()),
            ph_assumed: t.is_some_and(|t| t.ph_assumed),
            sampled_at: j.sampled_at,
            msg_id: &j.msg_id,
            source: j.source.as_str(),
            source_id: &j.source_id,
            station_id: (j.source == Source::Station).then_some(j.source_id.as_str()),
            newer_sampled_at: None,
        }
    }
}

impl ChangeLog {
    /// Records one state change caused by reading `j`.
    fn record(
        &mut self,
        mqtt: &MqttConfig,
        j: &JudgedReading,
        change: &Change,
    ) -> Result<(), StoreError> {
        let level = change.level.as_str();
        let at = j.sampled_at;
        let metal = j.metal.symbol();
        let row = match self.by_id.get(&change.incident_id) {
            Some(&i) => &mut self.incidents[i],
            None => {
                self.by_id.insert(change.incident_id, self.incidents.len());
                self.incidents.push(IncidentRow {
                    incident_id: change.incident_id,
                    opened: change.transition == Transition::Opened,
                    point_id: j.point_id.clone(),
                    metal,
                    county: j.county.clone(),
                    state: None,
                    level: None,
                    opened_sampled_at: at,
                    updated_sampled_at: at,
                    cleared_sampled_at: None,
                });
                let last = self.incidents.len() - 1;
                &mut self.incidents[last]
            }
        };
        row.updated_sampled_at = at;
        match change.transition {
            Transition::Opened => {
                row.state = Some("open");
                row.level = Some(level);
            }
            Transition::Escalated | Transition::Deescalated => row.level = Some(level),
            Transition::Cleared => {
                row.state = Some("cleared");
                row.cleared_sampled_at = Some(at);
            }
        }
        let event = AlertEvent::of(
            j,
            Some(change.incident_id),
            change.transition.as_str(),
            level,
        );
        self.push_event(mqtt, j, &event)
    }

    /// Records the alert event of a late exceedance caused by reading `j`: no incident row
    /// changes.
    fn record_late(
        &mut self,
        mqtt: &MqttConfig,
        j: &JudgedReading,
        late: &LateExceedance,
    ) -> Result<(), StoreError> {
        let state = LateExceedance::STATE;
        let event = AlertEvent::of(j, late.incident_id, state, late.level.as_str());
        let event = AlertEvent {
            newer_sampled_at: Some(late.newer_sampled_at),
            ..event
        };
        self.push_event(mqtt, j, &event)
    }

    /// Queues one alert event about reading `j`, its payload serialised at once.
    fn push_event(
        &mut self,
        mqtt: &MqttConfig,
        j: &JudgedReading,
        event: &AlertEvent<'_>,
    ) -> Result<(), StoreError> {
        let payload = serde_json::to_string(event)?;
        let topic = mqtt.alert_topic(&j.county, &j.point_id, j.metal);
        self.events.push(outbox::NewAlert {
            event_id: event.event_id,
            incident_id: event.incident_id,
            topic,
            payload,
        });
        Ok(())
    }

    /// Writes the incident rows (updates of earlier incidents first, so one cleared here
    /// frees its (point, metal) for an incident opened here) and the events, in order.
    /// Returns the number of events.
    async fn write(self, tx: &Transaction<'_>) -> Result<usize, StoreError> {
        if self.events.is_empty() {
            return Ok(0);
        }
        let (opened, updated): (Vec<&IncidentRow>, Vec<&IncidentRow>) =
            self.incidents.iter().partition(|r| r.opened);
        // Sent together, the update first. Both are prepared before anything is sent: an
        // update still being prepared would let the insert reach the server first, and an
        // incident opened here could then meet the one this batch clears for the same pair
        // (`incidents_one_open`).
        let update = tx.prepare_cached(UPDATE_INCIDENTS).await?;
        let insert = tx.prepare_cached(INSERT_INCIDENTS).await?;
        let (u, i, o) = tokio::join!(
            update_incidents(tx, &update, &updated),
            insert_incidents(tx, &insert, &opened),
            outbox::insert_alerts(tx, &self.events)
        );
        u?;
        i?;
        o?;
        Ok(self.events.len())
    }
}

/// [`update_incidents`]' statement.
const UPDATE_INCIDENTS: &str = "UPDATE incidents i SET level = coalesce(u.level, i.level),
        state = coalesce(u.state, i.state),
        updated_sampled_at = u.updated,
        cleared_sampled_at = coalesce(u.cleared, i.cleared_sampled_at)
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                $5::timestamptz[]) AS u(id, level, state, updated, cleared)
    WHERE i.incident_id = u.id";

/// [`insert_incidents`]' statement.
const INSERT_INCIDENTS: &str = "INSERT INTO incidents (incident_id, point_id, metal, county_code,
        state, level, opened_sampled_at, updated_sampled_at, cleared_sampled_at)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::timestamptz[])";

/// Applies the batch's changes to incidents opened before it (`stmt`: [`UPDATE_INCIDENTS`]).
async fn update_incidents(
    tx: &Transaction<'_>,
    stmt: &Statement,
    updated: &[&IncidentRow],
) -> Result<(), StoreError> {
    if updated.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = updated.iter().map(|r| r.incident_id).collect();
    let levels: Vec<Option<&str>> = updated.iter().map(|r| r.level).collect();
    let states: Vec<Option<&str>> = updated.iter().map(|r| r.state).collect();
    let at: Vec<DateTime<Utc>> = updated.iter().map(|r| r.updated_sampled_at).collect();
    let cleared: Vec<Option<DateTime<Utc>>> =
        updated.iter().map(|r| r.cleared_sampled_at).collect();
    tx.execute(stmt, &[&ids, &levels, &states, &at, &cleared])
        .await?;
    Ok(())
}

/// Inserts the incidents the batch opened (`stmt`: [`INSERT_INCIDENTS`]).
async fn insert_incidents(
    tx: &Transaction<'_>,
    stmt: &Statement,
    opened: &[&IncidentRow],
) -> Result<(), StoreError> {
    if opened.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = opened.iter().map(|r| r.incident_id).collect();
    let points: Vec<&str> = opened.iter().map(|r| r.point_id.as_str()).collect();
    let metals: Vec<&str> = opened.iter().map(|r| r.metal).collect();
    let counties: Vec<&str> = opened.iter().map(|r| r.county.as_str()).collect();
    let states: Vec<&str> = opened.iter().map(|r| r.state.unwrap_or("open")).collect();
    let levels: Vec<&str> = opened
        .iter()
        .map(|r| r.level.unwrap_or("screening"))
        .collect();
    let first: Vec<DateTime<Utc>> = opened.iter().map(|r| r.opened_sampled_at).collect();
    let at: Vec<DateTime<Utc>> = opened.iter().map(|r| r.updated_sampled_at).collect();
    let cleared: Vec<Option<DateTime<Utc>>> = opened.iter().map(|r| r.cleared_sampled_at).collect();
    let params: [&(dyn ToSql + Sync); 9] = [
        &ids, &points, &metals, &counties, &states, &levels, &first, &at, &cleared,
    ];
    tx.execute(stmt, &params).await?;
    Ok(())
}
