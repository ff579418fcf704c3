-- soilmon schema, version 20: an outbox row is born fanned out when no subscription exists.
--
-- The delivery engine fans out every alert row whose `fanned_out_at` is NULL and then marks
-- it: one more full-row UPDATE of a ~1 kB row per alert, and a SELECT of its payload, even
-- when there is no subscription to match. Measured on a 200,000-message drain with 80,494
-- alert events and no subscription (pg_stat_statements; docs/performance.md, 2026-12-06):
-- the fan-out's SELECT took 9.0 s and its UPDATE 2.1 s of PostgreSQL time, against 3.8 s for
-- storing the 200,000 samples.
--
-- From this version, a row's `fanned_out_at` defaults to now() when no live subscription
-- exists at insert time, so the engine never reads or rewrites it. The rule for a new
-- subscription is unchanged (migration 11): it receives the events raised after it exists.
-- A transaction that started before the subscription was added does not see it, so its
-- events are not fanned out to it: "after it exists" means written by a transaction that
-- began after the subscription's commit.
CREATE FUNCTION outbox_fanned_out_default() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM subscriptions WHERE removed_at IS NULL)
                THEN NULL ELSE now() END
$$;
ALTER TABLE outbox ALTER COLUMN fanned_out_at SET DEFAULT outbox_fanned_out_default();
