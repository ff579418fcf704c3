-- soilmon schema, version 24: what the publisher has still to send is a narrow queue table,
-- and the archive loses an index nothing on the write path needs.
--
-- Until now an outbox row was "published" when `published_at` was set: the publisher found
-- its work through the partial index `outbox_unpublished (id) WHERE published_at IS NULL`
-- and marked each published row with `UPDATE outbox SET published_at = now()`. That UPDATE
-- cannot be HOT (it changes the partial index's predicate), so every alert event's ~1 kB row
-- was written twice, with its index entries. Measured on the 200,000-message peer-bench
-- drain (80,494 alert events; pg_stat_statements, docs/performance.md, 2026-12-06): the
-- UPDATE took 1.0–2.3 s and the publisher's SELECT 0.6–0.9 s of PostgreSQL time.
--
-- From this version the rows still to publish are listed, by id only, in `outbox_pending`:
-- a statement-level trigger queues every inserted outbox row (whoever inserts it: the batch
-- writer, lab uploads, the console's incident actions, tests), the publisher reads the
-- oldest ids joined to their rows and, once the broker acknowledged them, deletes the ids.
-- The outbox rows themselves are written once and never updated by publishing.
--
-- `published_at` goes: nothing but the publisher read it, and a row is published exactly
-- when its id is no longer queued. When a round published is in the service's log and the
-- `soilmon_alerts_published_total` counter.
CREATE TABLE outbox_pending (
    id bigint PRIMARY KEY
);
COMMENT ON TABLE outbox_pending IS
    'Ids of outbox rows not yet acknowledged by the broker (queued by trigger on insert).';

CREATE FUNCTION outbox_queue() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_pending (id) SELECT id FROM queued;
    RETURN NULL;
END
$$;
CREATE TRIGGER outbox_queue AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS queued
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_queue();

INSERT INTO outbox_pending (id) SELECT id FROM outbox WHERE published_at IS NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;

GRANT SELECT, INSERT, DELETE ON outbox_pending TO soilmon_service;

-- `archive_kind_ref (kind, ref)` served only `soilmon verify`'s example of a reading no entry
-- covers, printed after a failed check; a text B-tree entry per stored message (and per lab
-- batch) paid for it on every append. That query now scans the archive, once, when a check
-- has already failed.
DROP INDEX archive_kind_ref;
