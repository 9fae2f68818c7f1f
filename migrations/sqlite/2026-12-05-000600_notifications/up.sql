-- Alert deliveries had a table of their own in a development build of 000300; they are
-- notifications now.
DROP TABLE IF EXISTS alert_deliveries;

-- The product's own services' webhook endpoints (Standard Webhooks), registered by admins.
-- `secret` is the whsec_ signing secret, sealed with AES-256-GCM and bound (AAD) to the row's
-- public id; during a rotation's overlap the one before it is kept, sealed, in
-- `previous_secret` until `previous_expires_at`, and both signatures are sent.
CREATE TABLE webhook_endpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    public_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- Space-separated event types this endpoint receives.
    event_types TEXT NOT NULL,
    secret BLOB NOT NULL,
    key_id TEXT NOT NULL,
    previous_secret BLOB,
    previous_key_id TEXT,
    previous_expires_at TIMESTAMP,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One durable outbox for every notification: customer e-mail, webhooks to the product's own
-- services and alert webhooks. A row is written in the transaction of the change that causes
-- it; `dedupe_key` (the cause and the recipient) makes a second write of the same notification
-- a no-op. `message_id` is what receivers deduplicate by (webhook-id, the e-mail's
-- Message-ID). Rows sharing an `order_key` (one customer at one destination) go out one at a
-- time, oldest first. A row being sent is `sending` until `next_attempt_at` (its lease).
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    dedupe_key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL CHECK (channel IN ('email', 'app_webhook', 'alert_webhook')),
    event_type TEXT NOT NULL,
    user_id BIGINT REFERENCES users (id) ON DELETE SET NULL,
    endpoint_id BIGINT REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    recipient TEXT NOT NULL,
    order_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'retrying', 'sent', 'dead', 'not_sent')),
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    claimed_by TEXT,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL,
    sent_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX notifications_due ON notifications (next_attempt_at)
    WHERE status IN ('pending', 'sending', 'retrying');
CREATE INDEX notifications_order ON notifications (order_key, id)
    WHERE status IN ('pending', 'sending', 'retrying');
CREATE INDEX notifications_listing ON notifications (channel, status, id);
CREATE INDEX notifications_endpoint ON notifications (endpoint_id);
