-- soilmon schema, version 3: broker identities, the tamper-evident archive, the service role.
-- (Version 2 is reserved for the lab-batch schema; nothing here depends on it.)

-- Broker identities (stations and bureaus). soilmon generates Mosquitto's password_file and
-- acl_file from this table. Only the Mosquitto PBKDF2-SHA512 hash of a secret is stored;
-- the secret itself is printed once by `soilmon stations add` / `soilmon bureaus add`.
CREATE TABLE broker_identities (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind          text NOT NULL CHECK (kind IN ('station', 'bureau')),
    password_hash text NOT NULL,
    -- Bureau counties (GB/T 2260 codes); NULL with all_counties for a city-wide bureau.
    counties      text[] NOT NULL DEFAULT '{}',
    all_counties  boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- The archive: every accepted raw station message (and lab batch file, and admin correction)
-- verbatim with its SHA-256, chained: entry_hash commits to prev_hash (the previous entry's
-- entry_hash), the entry's own fields and the digest of the readings derived from it.
-- See src/store/archive.rs for the exact hash layout; `soilmon verify` recomputes it.
CREATE TABLE archive (
    seq             bigint PRIMARY KEY CHECK (seq > 0),
    kind            text NOT NULL CHECK (kind IN ('station_message', 'lab_batch', 'correction')),
    ref             text NOT NULL,
    raw             bytea NOT NULL,
    raw_sha256      text NOT NULL,
    readings_digest text NOT NULL,
    prev_hash       text NOT NULL,
    entry_hash      text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL
);
CREATE INDEX archive_kind_ref ON archive (kind, ref);
CREATE INDEX archive_created ON archive (created_at);

-- The head of the chain, one row. Appenders lock it (SELECT … FOR UPDATE): one lock per
-- transaction serialises the chain.
CREATE TABLE archive_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint NOT NULL,
    hash text NOT NULL
);
INSERT INTO archive_head (id, seq, hash)
VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Append-only record: readings and archive rows cannot be updated or deleted, whoever asks,
-- except a reading UPDATE inside the admin correction path (`soilmon correct`), which sets
-- soilmon.correction = on in its transaction and appends a 'correction' chain entry.
-- A superuser can still disable the trigger: `soilmon verify` is what detects that.
CREATE FUNCTION soilmon_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- TG_ARGV[0] names the table: on a hypertable the trigger fires on its chunks.
    IF TG_ARGV[0] = 'readings' AND TG_OP = 'UPDATE'
       AND current_setting('soilmon.correction', true) = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'soilmon: % on % refused: the record is append-only (corrections: soilmon correct)',
        TG_OP, TG_ARGV[0] USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER readings_append_only BEFORE UPDATE OR DELETE ON readings
    FOR EACH ROW EXECUTE FUNCTION soilmon_append_only('readings');
CREATE TRIGGER archive_append_only BEFORE UPDATE OR DELETE ON archive
    FOR EACH ROW EXECUTE FUNCTION soilmon_append_only('archive');
CREATE TRIGGER archive_no_truncate BEFORE TRUNCATE ON archive
    FOR EACH STATEMENT EXECUTE FUNCTION soilmon_append_only('archive');

-- The service role (NOLOGIN: grant it to the login role the service uses, e.g.
-- CREATE ROLE soilmon_app LOGIN IN ROLE soilmon_service). It may read and append readings
-- and archive entries but never UPDATE, DELETE or TRUNCATE them. Roles are cluster-wide, so
-- another database (or a concurrent migration) may already have created it.
DO $$
BEGIN
    CREATE ROLE soilmon_service NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT USAGE ON SCHEMA public TO soilmon_service;
GRANT SELECT, INSERT ON readings, archive TO soilmon_service;
GRANT SELECT, UPDATE ON archive_head TO soilmon_service;
GRANT SELECT, INSERT, UPDATE ON messages, quarantine, incident_tracks, incidents, outbox
    TO soilmon_service;
GRANT SELECT ON points, broker_identities, schema_migrations, point_soil_tiers TO soilmon_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO soilmon_service;
