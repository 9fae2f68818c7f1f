-- Alert rules (audit::alerts): what each raised alert counted and for how long it stays active
-- (the security dashboard lists the active ones).
ALTER TABLE alert_state ADD COLUMN last_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE alert_state ADD COLUMN window_secs BIGINT NOT NULL DEFAULT 0;

-- A digest (SHA-256) of the Stripe-Signature header an event first arrived with: the same id
-- re-sent under another signature is recorded as a replay attempt.
ALTER TABLE webhook_events ADD COLUMN signature_digest TEXT;
