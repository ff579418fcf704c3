-- soilmon schema, registered as version 15 (issue 13's "migration 12", renumbered to avoid
-- the console's own 12): the quarantine replay log, and indexes for browsing the quarantine.
--
-- A replay re-runs a quarantined message through the ingest path (parse, judge, store). What
-- it stores enters the archive as any station message does, so `soilmon verify` covers the
-- readings; this table records who replayed which entry, when, and how it came out. It is
-- append-only like the archive (same trigger).
CREATE TABLE quarantine_replays (
    id            bigserial PRIMARY KEY,
    quarantine_id bigint NOT NULL REFERENCES quarantine (id),
    replayed_at   timestamptz NOT NULL,
    replayed_by   text NOT NULL,
    -- stored: this replay stored the message; already_stored: the message was stored before
    -- (an earlier replay or a resend), nothing written; refused: still bad, with its current
    -- reason and detail.
    outcome       text NOT NULL CHECK (outcome IN ('stored', 'already_stored', 'refused')),
    reason        text,
    detail        text,
    CHECK ((outcome = 'refused') = (reason IS NOT NULL))
);
CREATE INDEX quarantine_replays_entry ON quarantine_replays (quarantine_id, id);
CREATE TRIGGER quarantine_replays_append_only BEFORE UPDATE OR DELETE ON quarantine_replays
    FOR EACH ROW EXECUTE FUNCTION soilmon_append_only('quarantine_replays');
CREATE TRIGGER quarantine_replays_no_truncate BEFORE TRUNCATE ON quarantine_replays
    FOR EACH STATEMENT EXECUTE FUNCTION soilmon_append_only('quarantine_replays');

-- Browsing: by station and by time (by reason is quarantine_reason, from version 1).
CREATE INDEX quarantine_station ON quarantine (station_id, received_at);
CREATE INDEX quarantine_received ON quarantine (received_at);

GRANT SELECT, INSERT ON quarantine_replays TO soilmon_service;
GRANT USAGE, SELECT ON SEQUENCE quarantine_replays_id_seq TO soilmon_service;
