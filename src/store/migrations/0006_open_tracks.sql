-- soilmon schema, version 6: incident tracks are read and written only while an incident is
-- open (or when a sample changes a pair's state).
--
-- Before, every sample of every pair locked and rewrote its track row to keep the newest
-- sample time, which cost the database more than storing the readings themselves. A pair
-- with no open incident now keeps no state of its own: when one of its samples exceeds, the
-- newest earlier sample time of the pair is read from `readings` (index
-- readings_point_metal_time), which holds every sample the tracks have ever been given. So
-- a late, older exceedance still cannot open an incident behind a newer sample.
--
-- Writers serialise on a transaction-level advisory lock instead of row locks (see
-- store::readings::INCIDENT_LOCK), since a pair with no row, or an idle row, has nothing to
-- lock.
CREATE INDEX incident_tracks_open ON incident_tracks (point_id) WHERE incident_id IS NOT NULL;
COMMENT ON TABLE incident_tracks IS
    'Open incident per (point, metal). last_sampled_at is the newest sample applied while the '
    'incident was open; rows with incident_id NULL are history (the state at the last clear).';
