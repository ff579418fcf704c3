-- soilmon schema, version 11: alert subscriptions of bureaus and their deliveries
-- (webhook, DingTalk and WeCom group robots), delivered at least once, in order per
-- subscription, by the delivery engine (src/deliver/).
--
-- A subscription belongs to a bureau broker identity; its filters (jsonb, checked by
-- soilmon at `subscriptions add`) narrow the bureau's counties, metals, levels, states,
-- source and land-use class. Secrets (webhook HMAC keys, robot URLs and signing secrets)
-- are not here: they live in deliver.secrets_file, outside the database, mode 0600.
CREATE TABLE subscriptions (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    bureau     text NOT NULL REFERENCES broker_identities (username),
    channel    text NOT NULL CHECK (channel IN ('webhook', 'dingtalk', 'wecom')),
    -- Where to send: the webhook URL; for robots the URL with its token redacted (the real
    -- URL is in the secrets file).
    target     text NOT NULL,
    -- Channel options: headers, timeout_ms, ca_file.
    options    jsonb NOT NULL DEFAULT '{}',
    filters    jsonb NOT NULL DEFAULT '{}',
    paused     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    removed_at timestamptz
);
CREATE UNIQUE INDEX subscriptions_live_name ON subscriptions (name) WHERE removed_at IS NULL;

-- Which alert events have been matched against the subscriptions (the fan-out step).
-- Rows written before this version are not fanned out: a new subscription receives the
-- events raised after it exists.
ALTER TABLE outbox ADD COLUMN fanned_out_at timestamptz;
UPDATE outbox SET fanned_out_at = now() WHERE kind = 'alert';
CREATE INDEX outbox_not_fanned_out ON outbox (id) WHERE fanned_out_at IS NULL AND kind = 'alert';

-- One row per (subscription, alert event). The engine claims the oldest pending row of each
-- subscription (FOR UPDATE SKIP LOCKED, then a lease in claimed_until), so a subscription
-- has one delivery in flight at a time, in outbox order, whichever instance claims it.
CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    subscription_id bigint NOT NULL REFERENCES subscriptions (id),
    outbox_id       bigint NOT NULL REFERENCES outbox (id),
    event_id        uuid NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_until   timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX deliveries_pending ON deliveries (subscription_id, outbox_id) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (subscription_id, id) WHERE state = 'dead';

GRANT SELECT ON subscriptions TO soilmon_service;
GRANT SELECT, INSERT, UPDATE ON deliveries TO soilmon_service;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO soilmon_service;
