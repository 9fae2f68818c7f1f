ALTER TABLE webhook_events DROP COLUMN signature_digest;
ALTER TABLE alert_state DROP COLUMN window_secs;
ALTER TABLE alert_state DROP COLUMN last_count;
