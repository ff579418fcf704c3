-- soilmon schema, version 18: development-land plots and the lab-first soil tier (issue 15).
--
-- Development-land plots (地块): planned use is a GB 36600 class (development_first or
-- development_second); status follows the ladder suspected -> investigated -> risk_control ->
-- remediated (NULL: registered, not suspected). Status changes only by a person
-- (`soilmon plots status`), each recorded in plot_status_changes with who, when and why.
-- A point belongs to at most one plot.
CREATE TABLE plots (
    plot_id     text PRIMARY KEY,
    name        text NOT NULL,
    county_code text NOT NULL,
    planned_use text NOT NULL CHECK (planned_use IN ('development_first', 'development_second')),
    status      text CHECK (status IN ('suspected', 'investigated', 'risk_control', 'remediated')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE plot_points (
    plot_id  text NOT NULL REFERENCES plots (plot_id),
    point_id text NOT NULL UNIQUE REFERENCES points (point_id),
    PRIMARY KEY (plot_id, point_id)
);
CREATE TABLE plot_status_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plot_id     text NOT NULL REFERENCES plots (plot_id),
    from_status text,
    to_status   text NOT NULL,
    changed_by  text NOT NULL,
    reason      text NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX plot_status_changes_plot ON plot_status_changes (plot_id, changed_at);
GRANT SELECT ON plots, plot_points, plot_status_changes TO soilmon_service;

-- The soil tier of a farmland point, lab first: per metal, the latest reading decides its
-- campaign (sampling year, UTC+8); within that campaign the latest lab result, where one
-- exists, outranks any field screening (station) reading, however newer. Same columns as
-- the view of schema 10.
CREATE OR REPLACE VIEW point_soil_tiers AS
WITH latest AS (
    SELECT DISTINCT ON (r.point_key, r.metal) r.point_key, r.metal, r.level, r.sampled_at
    FROM readings r
    JOIN points p ON p.point_key = r.point_key
    WHERE p.land_use NOT IN ('development_first', 'development_second')
      AND r.metal <> 5
    ORDER BY r.point_key, r.metal, r.sampled_at DESC
), decided AS (
    SELECT l.point_key, l.metal, COALESCE(lab.level, l.level) AS level, l.sampled_at
    FROM latest l
    LEFT JOIN LATERAL (
        SELECT r2.level
        FROM readings r2
        JOIN samples s2 ON s2.sample_key = r2.sample_key
        JOIN sources so2 ON so2.source_key = s2.source_key
        WHERE r2.point_key = l.point_key AND r2.metal = l.metal AND so2.source = 'lab'
          AND r2.sampled_at >= (date_trunc('year', l.sampled_at AT TIME ZONE 'Asia/Shanghai')
                                AT TIME ZONE 'Asia/Shanghai')
        ORDER BY r2.sampled_at DESC
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
