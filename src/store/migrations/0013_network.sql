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
