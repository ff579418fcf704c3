-- On a drained soilmon_peer schema (one soilmon-only peer-bench run of the base build), after:
--   CREATE INDEX rc_samples_point_time ON samples (point_key, sampled_at DESC);
--   CREATE INDEX rc_readings_sample ON readings (sample_key); ANALYZE samples; ANALYZE readings;
-- run twice: psql -d benchpeers -X -q -f read-paths-via-samples.sql
SET search_path = soilmon_peer, public;
SET timescaledb.enable_runtime_exclusion = off;
\o /dev/null
-- warm
SELECT count(*) FROM points p CROSS JOIN metals m CROSS JOIN LATERAL (SELECT sampled_at FROM readings r WHERE r.point_key = p.point_key AND r.metal = m.metal ORDER BY sampled_at DESC LIMIT 1) x;
\o
\echo latest-per-point-metal current
EXPLAIN (ANALYZE, SUMMARY, COSTS OFF, TIMING OFF) SELECT count(*) FROM points p CROSS JOIN metals m CROSS JOIN LATERAL (SELECT sampled_at FROM readings r WHERE r.point_key = p.point_key AND r.metal = m.metal ORDER BY sampled_at DESC LIMIT 1) x;
\echo latest-per-point-metal via-samples
EXPLAIN (ANALYZE, SUMMARY, COSTS OFF, TIMING OFF) SELECT count(*) FROM points p CROSS JOIN metals m CROSS JOIN LATERAL (SELECT s.sampled_at FROM samples s JOIN readings r ON r.sample_key = s.sample_key AND r.sampled_at = s.sampled_at AND r.metal = m.metal WHERE s.point_key = p.point_key ORDER BY s.sampled_at DESC LIMIT 1) x;
\echo series current
EXPLAIN (ANALYZE, SUMMARY, COSTS OFF, TIMING OFF) SELECT sampled_at, value_mgkg FROM readings WHERE point_key = 17 AND metal = 3 ORDER BY sampled_at;
\echo series via-samples
EXPLAIN (ANALYZE, SUMMARY, COSTS OFF, TIMING OFF) SELECT s.sampled_at, r.value_mgkg FROM samples s JOIN readings r ON r.sample_key = s.sample_key AND r.sampled_at = s.sampled_at WHERE s.point_key = 17 AND r.metal = 3 ORDER BY s.sampled_at;
