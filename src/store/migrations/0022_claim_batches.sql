-- soilmon schema, version 22: the delivery engine claims batches (issue 14).
--
-- The claim (store/deliveries.rs, `claim_batches`) now reads, per subscription, its oldest
-- pending deliveries in outbox order through `deliveries_pending (subscription_id,
-- outbox_id) WHERE state = 'pending'` (schema 11) with a LIMIT, and groups them by incident
-- key itself. Nothing reads `deliveries_pending_key (subscription_id, order_key, outbox_id)`
-- any more (the previous claim's DISTINCT ON over every pending row did), while every
-- fanned-out delivery and every change of state still wrote it: dropped.
DROP INDEX IF EXISTS deliveries_pending_key;
