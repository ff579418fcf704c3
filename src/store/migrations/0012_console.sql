-- soilmon schema, version 12: the web console (issue 13).
--
-- console_sessions: a signed-in browser. The cookie carries a random session id; only its
-- SHA-256 is stored here, with the SHA-256 of the API token it was exchanged for (so
-- revoking the token ends the session), the CSRF token every state-changing request must
-- echo, and the expiry.
CREATE TABLE console_sessions (
    session_sha256 text PRIMARY KEY,
    token_sha256   text NOT NULL,
    csrf           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- incident_actions: the human workflow beside the reading-driven incident state
-- (acknowledge, assign, note, investigate, close). Append-only like readings: each row is
-- also an `incident_action` archive entry (the row's JSON is the entry's raw bytes), so
-- `soilmon verify` covers it, and an outbox event of kind `incident_action`.
CREATE TABLE incident_actions (
    id          bigserial PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES incidents (incident_id),
    action      text NOT NULL
                CHECK (action IN ('acknowledge', 'assign', 'note', 'investigate', 'close')),
    actor       text NOT NULL,
    detail      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL,
    archive_seq bigint NOT NULL
);
CREATE INDEX incident_actions_incident ON incident_actions (incident_id, id);

ALTER TABLE archive DROP CONSTRAINT archive_kind_check;
ALTER TABLE archive ADD CONSTRAINT archive_kind_check
    CHECK (kind IN ('station_message', 'lab_batch', 'correction', 'incident_action'));
ALTER TABLE outbox DROP CONSTRAINT outbox_kind_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_kind_check
    CHECK (kind IN ('alert', 'reject', 'incident_action'));

-- Console pages read the incident feed newest first.
CREATE INDEX IF NOT EXISTS incidents_updated ON incidents (updated_sampled_at DESC);

GRANT SELECT, INSERT, DELETE ON console_sessions TO soilmon_service;
GRANT SELECT, INSERT ON incident_actions TO soilmon_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO soilmon_service;
