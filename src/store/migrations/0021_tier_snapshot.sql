-- soilmon schema, version 21: a snapshot of every farmland point's soil tier, for the console's
-- map and point pages and the public disclosure page.
--
-- `point_soil_tiers` (the exact view) finds the latest reading of every point × metal with a
-- DISTINCT ON over all readings: measured at 1.6 M readings, 2.0-2.6 s per query on a loaded
-- 2-core machine, on every map load, point page and public download. The snapshot holds the
-- same rows; `refresh_point_soil_tiers()` recomputes it when a sample was stored since the last
-- refresh (soilmon run calls it every `console.tiers_refresh_secs`). Readers of the snapshot
-- see the tiers as of the last refresh; open incidents (the map's live colour) are read live.
-- `soilmon tiers` and the farmland categories keep reading the exact view.
CREATE MATERIALIZED VIEW point_soil_tiers_snapshot AS
    SELECT point_id, soil_tier, metals_seen, latest_sample, note FROM point_soil_tiers;
-- REFRESH ... CONCURRENTLY needs a unique index; readers look points up by id.
CREATE UNIQUE INDEX point_soil_tiers_snapshot_point ON point_soil_tiers_snapshot (point_id);

-- What the last refresh saw: the newest sample key and when it ran.
CREATE TABLE point_soil_tiers_refreshed (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    sample_key  bigint NOT NULL,
    refreshed_at timestamptz NOT NULL
);
INSERT INTO point_soil_tiers_refreshed VALUES (true, coalesce((SELECT max(sample_key) FROM samples), 0), now());

-- Refreshes the snapshot when no other session is refreshing it (several soilmon instances may
-- call it) and either the newest sample key changed since the last refresh or that refresh is
-- older than `max_age`. The age bound covers a transaction that stored samples under lower
-- keys and committed after a refresh had seen a higher one (a lab batch beside a station
-- batch). Returns whether it refreshed. Runs as the schema owner (SECURITY DEFINER): REFRESH
-- needs ownership; the service role only calls it.
CREATE FUNCTION refresh_point_soil_tiers(max_age interval) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    newest bigint;
BEGIN
    -- 83956513 = 0x5011321, the key of this refresh.
    IF NOT pg_try_advisory_xact_lock(83956513) THEN
        RETURN false;
    END IF;
    SELECT coalesce(max(sample_key), 0) INTO newest FROM samples;
    IF EXISTS (SELECT 1 FROM point_soil_tiers_refreshed
               WHERE sample_key = newest AND refreshed_at > now() - max_age) THEN
        RETURN false;
    END IF;
    REFRESH MATERIALIZED VIEW CONCURRENTLY point_soil_tiers_snapshot;
    UPDATE point_soil_tiers_refreshed SET sample_key = newest, refreshed_at = now();
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION refresh_point_soil_tiers(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION refresh_point_soil_tiers(interval) TO soilmon_service;
GRANT SELECT ON point_soil_tiers_snapshot, point_soil_tiers_refreshed TO soilmon_service;
