DROP INDEX security_events_aggregate;
DROP INDEX security_events_kind;
ALTER TABLE security_events DROP COLUMN aggregate_key;
ALTER TABLE security_events DROP COLUMN last_seen_at;
ALTER TABLE security_events DROP COLUMN count;
CREATE INDEX security_events_kind ON security_events (kind, occurred_at);
