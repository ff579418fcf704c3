-- soilmon schema, version 17: e-mail subscriptions, daily digests and reminders, overdue and
-- incident-workflow events for subscriptions, and several deliveries in flight per
-- subscription, in order per incident key (src/deliver/, docs/deliveries.md).

ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_channel_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_channel_check
    CHECK (channel IN ('webhook', 'dingtalk', 'wecom', 'email'));
-- The last digest (or reminder) slot sent; NULL: none yet (the subscription's creation
-- counts). digest_claimed_until leases the digest to one instance while it is sent, and
-- after a failed attempt holds the retry back.
ALTER TABLE subscriptions ADD COLUMN digest_sent_at timestamptz;
ALTER TABLE subscriptions ADD COLUMN digest_claimed_until timestamptz;
GRANT UPDATE (digest_sent_at, digest_claimed_until) ON subscriptions TO soilmon_service;

-- The incident key of a delivery (point × metal; the point alone for overdue events):
-- deliveries of one subscription and one key are sent strictly in outbox order, different
-- keys may be in flight at once (up to the subscription's concurrency).
ALTER TABLE deliveries ADD COLUMN order_key text NOT NULL DEFAULT '';
UPDATE deliveries d SET order_key = concat(o.payload->>'point_id', '|', o.payload->>'metal')
    FROM outbox o WHERE o.id = d.outbox_id AND d.state = 'pending';
CREATE INDEX deliveries_pending_key ON deliveries (subscription_id, order_key, outbox_id)
    WHERE state = 'pending';

-- The console's incident-workflow events are fanned out too (from now on: earlier ones
-- count as fanned out).
UPDATE outbox SET fanned_out_at = now() WHERE kind = 'incident_action' AND fanned_out_at IS NULL;
DROP INDEX outbox_not_fanned_out;
CREATE INDEX outbox_not_fanned_out ON outbox (id)
    WHERE fanned_out_at IS NULL AND kind IN ('alert', 'incident_action');
