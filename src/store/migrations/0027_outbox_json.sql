-- soilmon schema, version 27: an outbox payload is kept as the JSON text the publisher sends,
-- and the incident an alert event concerns is a column.
--
-- Until now `payload` was `jsonb`: the server parsed every alert event's text into its binary
-- form on insert, turned it back into text for the publisher, and the publisher parsed that
-- into a map and serialised it again before sending. On the 200,000-message peer-bench drain
-- (80,492 alert events; docs/performance.md, 2026-12-06, seventh session) the insert ran
-- inside the batch's serial finish. Measured on those payloads in one statement
-- (deploy/bench/outbox-payload.sh, three rounds): 0.37–0.41 s as `json` against 0.81–0.99 s
-- as `jsonb`; reading them back (binary COPY out) 60–79 ms against 264–413 ms.
--
-- `json` keeps the text as written (checked to be JSON, not re-encoded), so the bytes the
-- writer serialised are the bytes published. Every `->>` in the queries works on it
-- unchanged, but reads the text from the start each time; the one query that scanned the
-- whole outbox by a payload field (the alert events of one incident, console and API) now
-- filters on `incident_id` instead, filled here from the existing rows.
ALTER TABLE outbox ADD COLUMN incident_id uuid;
COMMENT ON COLUMN outbox.incident_id IS
    'The incident an alert or incident_action event concerns (its payload''s incident_id).';
UPDATE outbox SET incident_id = (payload->>'incident_id')::uuid
    WHERE payload->>'incident_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
