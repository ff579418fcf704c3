-- soilmon schema, version 1.
CREATE EXTENSION IF NOT EXISTS timescaledb;

-- Monitoring point registry (soilmon points import).
CREATE TABLE points (
    point_id    text PRIMARY KEY,
    name        text NOT NULL,
    county_code text NOT NULL,
    lon         double precision NOT NULL,
    lat         double precision NOT NULL,
    point_type  text NOT NULL CHECK (point_type IN ('basic', 'risk', 'background')),
    land_use    text NOT NULL,
    ph          double precision CHECK (ph BETWEEN 0 AND 14),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted station message: the idempotency key (station_id, msg_id), the hash
-- of its canonical content (to tell a redelivery from a conflicting reuse of the id), and
-- the payload as sent, extra fields included.
CREATE TABLE messages (
    station_id     text NOT NULL,
    msg_id         text NOT NULL,
    content_sha256 text NOT NULL,
    point_id       text NOT NULL,
    sampled_at     timestamptz NOT NULL,
    topic          text NOT NULL,
    payload        jsonb NOT NULL,
    received_at    timestamptz NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, msg_id)
);

-- Every judged reading. Hypertable on sampled_at; the unique key includes the time column.
CREATE TABLE readings (
    sampled_at          timestamptz NOT NULL,
    point_id            text NOT NULL,
    metal               text NOT NULL,
    source              text NOT NULL CHECK (source IN ('station', 'lab')),
    source_id           text NOT NULL,
    msg_id              text NOT NULL,
    value_mgkg          double precision NOT NULL,
    value_orig          double precision NOT NULL,
    unit_orig           text NOT NULL,
    detected            boolean NOT NULL,
    level               text NOT NULL
        CHECK (level IN ('none', 'screening', 'intervention', 'undeterminable', 'no_standard')),
    screening_mgkg      double precision,
    intervention_mgkg   double precision,
    standard_id         text,
    standard_version    text,
    threshold_column    text,
    screening_source    text,
    intervention_source text,
    land_use            text NOT NULL,
    ph                  double precision,
    ph_band             text,
    ph_assumed          boolean NOT NULL,
    method              text,
    depth_top_cm        double precision,
    depth_bottom_cm     double precision,
    received_at         timestamptz NOT NULL,
    UNIQUE (source, source_id, msg_id, metal, sampled_at)
);
SELECT create_hypertable('readings', by_range('sampled_at', INTERVAL '90 days'));
CREATE INDEX readings_point_metal_time ON readings (point_id, metal, sampled_at DESC);

-- Refused messages, whole: raw bytes, reason code, detail. A redelivered copy of the same
-- bytes refused for the same reason is recorded (and answered) once.
CREATE TABLE quarantine (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    station_id  text,
    msg_id      text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    raw         bytea NOT NULL,
    raw_sha256  text NOT NULL,
    UNIQUE (topic, raw_sha256, reason)
);
CREATE INDEX quarantine_reason ON quarantine (reason, received_at);

-- Incident state per (point, metal): newest applied sample time and the open incident.
CREATE TABLE incident_tracks (
    point_id        text NOT NULL,
    metal           text NOT NULL,
    last_sampled_at timestamptz NOT NULL,
    incident_id     uuid,
    level           text,
    ok_streak       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (point_id, metal)
);

-- Incident history.
CREATE TABLE incidents (
    incident_id        uuid PRIMARY KEY,
    point_id           text NOT NULL,
    metal              text NOT NULL,
    county_code        text NOT NULL,
    state              text NOT NULL CHECK (state IN ('open', 'cleared')),
    level              text NOT NULL CHECK (level IN ('screening', 'intervention')),
    opened_sampled_at  timestamptz NOT NULL,
    updated_sampled_at timestamptz NOT NULL,
    cleared_sampled_at timestamptz
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (point_id, metal) WHERE state = 'open';

-- Transactional outbox: alert events and reject replies, written in the same transaction as
-- the data they describe, published QoS1 by the alert publisher, then marked.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    kind         text NOT NULL CHECK (kind IN ('alert', 'reject')),
    topic        text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Soil screening tier of each farmland point from the latest reading of each metal
-- (soil-only: the legal GB 15618 category also needs crop co-monitoring).
CREATE VIEW point_soil_tiers AS
WITH latest AS (
    SELECT DISTINCT ON (r.point_id, r.metal) r.point_id, r.metal, r.level, r.sampled_at
    FROM readings r
    JOIN points p ON p.point_id = r.point_id
    WHERE p.land_use NOT IN ('development_first', 'development_second')
      AND r.metal <> 'Cr6'
    ORDER BY r.point_id, r.metal, r.sampled_at DESC
)
SELECT point_id,
       CASE
           WHEN bool_or(level = 'intervention') THEN 'strict_control'
           WHEN bool_or(level = 'screening') THEN 'safe_utilisation'
           WHEN bool_or(level = 'undeterminable') THEN 'undeterminable'
           ELSE 'priority_protection'
       END AS soil_tier,
       count(*) AS metals_seen,
       max(sampled_at) AS latest_sample,
       'soil only: the legal category also needs crop co-monitoring' AS note
FROM latest
GROUP BY point_id;
