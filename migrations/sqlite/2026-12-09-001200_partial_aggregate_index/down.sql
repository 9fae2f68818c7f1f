DROP INDEX security_events_aggregate;
CREATE UNIQUE INDEX security_events_aggregate ON security_events (aggregate_key);
