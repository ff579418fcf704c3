-- soilmon schema, version 28: the soil tier view reads each point x metal by index probes,
-- and the snapshot's refresh runs without JIT compilation.
--
-- `soilmon run` refreshes the tier snapshot (schema 21) every `console.tiers_refresh_secs`
-- when samples arrived. The view under it cost time in proportion to every reading stored:
-- its `latest` step was a DISTINCT ON over all readings of farmland points, and its lab-first
-- step walked, for every point x metal, all of that pair's readings of the year back to a lab
-- one, looking each one's sample and source up (for a pair with no lab result: every reading
-- of the year). Measured on a bench database after the 30 s alert-latency phase (480,000
-- readings, 44 points, no lab batch; docs/performance.md, 2026-12-07, deploy/bench/tier-view.sh):
-- 1.4-3.7 s a query, and 1.6 s of PostgreSQL time per refresh (pg_stat_statements), in a
-- 30 s window where soilmon itself needed 10 s of CPU.
--
-- Now both steps are index probes, so a refresh costs in proportion to the points, not the
-- readings:
--   * the latest reading of each farmland point x metal: one descent of
--     `readings_point_metal_time` (point_key, metal, sampled_at DESC) per pair;
--   * the latest lab result of the pair in that reading's campaign year: lab samples are
--     found through a partial index of the samples that carry no content hash (lab samples;
--     station messages always carry one, schema 10), by point and time, and each is checked
--     against its source (`so2.source = 'lab'`) and its reading of the metal, as before.
-- Same rows as the view of schema 18 (the bench database above: no row differs either way),
-- 5-9 ms a query there with JIT off. PostgreSQL's JIT compiles this query because the
-- planner's estimates for the hypertable are large, which made each run 0.23-0.43 s longer;
-- the refresh function turns it off for itself. On a bench database with a 100,000-row lab
-- batch (80,000 lab samples over 44 points, 20,000 station samples): 0.25-0.34 s against
-- 0.68-1.09 s; but right after that upload, before autovacuum had analysed the new samples,
-- the planner sorted each pair's readings for a merge join and the view took 5.4-8.9 s
-- (0.70-1.21 s before), until the statistics caught up.
--
-- The cost: every lab sample is one more index entry. The bench's 100,000-row upload (80,000
-- field samples) spent 0.3-0.7 s more in its samples-and-readings step on a 2-vCPU machine
-- (four interleaved pairs).
CREATE INDEX samples_lab_point ON samples (point_key, sampled_at DESC)
    WHERE content_sha256 IS NULL;

CREATE OR REPLACE VIEW point_soil_tiers AS
WITH latest AS (
    SELECT p.point_key, m.metal, r.level, r.sampled_at
    FROM points p
    CROSS JOIN metals m
    CROSS JOIN LATERAL (
        SELECT r.level, r.sampled_at
        FROM readings r
        WHERE r.point_key = p.point_key AND r.metal = m.metal
        ORDER BY r.sampled_at DESC
        LIMIT 1
    ) r
    WHERE p.land_use NOT IN ('development_first', 'development_second')
      AND m.metal <> 5
), decided AS (
    SELECT l.point_key, l.metal, COALESCE(lab.level, l.level) AS level, l.sampled_at
    FROM latest l
    LEFT JOIN LATERAL (
        SELECT r2.level
        FROM samples s2
        JOIN sources so2 ON so2.source_key = s2.source_key
        JOIN readings r2 ON r2.point_key = s2.point_key AND r2.metal = l.metal
                        AND r2.sampled_at = s2.sampled_at AND r2.sample_key = s2.sample_key
        WHERE s2.point_key = l.point_key AND s2.content_sha256 IS NULL AND so2.source = 'lab'
          AND s2.sampled_at >= (date_trunc('year', l.sampled_at AT TIME ZONE 'Asia/Shanghai')
                                AT TIME ZONE 'Asia/Shanghai')
        ORDER BY s2.sampled_at DESC
        LIMIT 1
    ) lab ON true
)
SELECT p.point_id,
       CASE
           WHEN bool_or(d.level = 2) THEN 'strict_control'
           WHEN bool_or(d.level = 1) THEN 'safe_utilisation'
           WHEN bool_or(d.level = 3) THEN 'undeterminable'
           ELSE 'priority_protection'
       END AS soil_tier,
       count(*) AS metals_seen,
       max(d.sampled_at) AS latest_sample,
       'soil only: the legal category also needs crop co-monitoring' AS note
FROM decided d
JOIN points p ON p.point_key = d.point_key
GROUP BY p.point_id;

ALTER FUNCTION refresh_point_soil_tiers(interval) SET jit = off;
