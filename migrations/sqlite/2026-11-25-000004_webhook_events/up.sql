-- Every Stripe event Tollgate acknowledged, stored before the 200 is sent (unique by Stripe's
-- id: a duplicate delivery finds it and changes nothing). The payload is sealed (AAD = event id).
CREATE TABLE webhook_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stripe_event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    livemode BOOLEAN NOT NULL,
    stripe_created TIMESTAMP NOT NULL,
    payload_sealed BLOB NOT NULL,
    key_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('received', 'applied', 'failed', 'ignored')),
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    received_at TIMESTAMP NOT NULL,
    processed_at TIMESTAMP
);
CREATE INDEX webhook_events_received_at ON webhook_events (received_at);
CREATE INDEX webhook_events_key_id ON webhook_events (key_id);
CREATE INDEX webhook_events_status ON webhook_events (status, id);

-- When each alert was last raised: an alert fires at most once per window, across instances.
CREATE TABLE alert_state (
    name TEXT PRIMARY KEY,
    last_raised_at TIMESTAMP NOT NULL
);
