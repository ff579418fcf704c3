-- soilmon schema, version 13: network management (issue 15).
--
-- Monitoring obligations: a point may name the programs it belongs to (registry column
-- `programs`, optional in the CSV); the obligations themselves are data
-- (config/obligations/*.toml). A point never sampled is due one interval after it was
-- registered, hence registered_at (existing points: the time of this migration).
ALTER TABLE points ADD COLUMN programs text[] NOT NULL DEFAULT '{}';
ALTER TABLE points ADD COLUMN registered_at timestamptz NOT NULL DEFAULT now();

-- Points currently overdue (one row per point while any owed metal is overdue). The periodic
-- check in `soilmon run` raises `overdue` when a row is inserted, again once per period
-- (next_reminder_at) while it stays, and `overdue_cleared` when the row is deleted.
CREATE TABLE overdue_points (
    point_id            text PRIMARY KEY,
    county_code         text NOT NULL,
    overdue_since       timestamptz NOT NULL,
    raised_at           timestamptz NOT NULL,
    next_reminder_at    timestamptz NOT NULL,
    metals              text[] NOT NULL,
    obligations_version text NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE ON overdue_points TO soilmon_service;

-- Crop samples of lab batches (soil–crop co-monitoring): one row per (sample, metal), judged
-- against the food limits (GB 2762) by category. The lab row itself is in lab_rows (never
-- in readings: a crop is not soil). campaign: the sampling year (UTC+8).
CREATE TABLE crop_results (
    batch_id       text NOT NULL,
    sample_id      text NOT NULL,
    metal          text NOT NULL,
    point_id       text NOT NULL,
    campaign       text NOT NULL,
    sampled_at     timestamptz NOT NULL,
    matrix         text NOT NULL,
    food_category  text NOT NULL,
    value_mgkg     double precision NOT NULL,
    detected       boolean NOT NULL,
    limit_mgkg     double precision,
    level          text NOT NULL CHECK (level IN
        ('no_limit', 'within_limit', 'undeterminable', 'exceeding', 'severely_exceeding')),
    standard_id    text NOT NULL,
    standard_version text NOT NULL,
    limit_source   text,
    received_at    timestamptz NOT NULL,
    PRIMARY KEY (sample_id, metal, batch_id)
);
CREATE INDEX crop_results_point ON crop_results (point_id, campaign);
GRANT SELECT, INSERT ON crop_results TO soilmon_service;

-- Key supervised enterprises (重点监管企业), by unified social credit code (checked against
-- GB 32100 on import), and the monitoring points around/of each: an `enterprise` API token
-- named by the code may upload lab batches for these points only.
CREATE TABLE enterprises (
    credit_code text PRIMARY KEY CHECK (credit_code ~ '^[0-9A-HJ-NPQRTUWXY]{18}$'),
    name        text NOT NULL,
    industry    text NOT NULL,
    county_code text NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE enterprise_points (
    credit_code text NOT NULL REFERENCES enterprises (credit_code),
    point_id    text NOT NULL REFERENCES points (point_id),
    PRIMARY KEY (credit_code, point_id)
);
GRANT SELECT ON enterprises, enterprise_points TO soilmon_service;
