-- Alert rules (audit::alerts): what each raised alert counted and for how long it stays active
-- (the security dashboard lists the active ones).
ALTER TABLE alert_state ADD COLUMN last_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE alert_state ADD COLUMN window_secs BIGINT NOT NULL DEFAULT 0;

-- Alert notifications to ALERT_WEBHOOK_URL, written in the same transaction as the alert's
-- audit row and sent by a background worker (retried with backoff), so an alert survives a
-- restart. `body` is the JSON sent (rule, counts, instance: never a secret or PII).
CREATE TABLE alert_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP,
    dead_at TIMESTAMP,
    last_error TEXT
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;

-- A digest (SHA-256) of the Stripe-Signature header an event first arrived with: the same id
-- re-sent under another signature is recorded as a replay attempt.
ALTER TABLE webhook_events ADD COLUMN signature_digest TEXT;
