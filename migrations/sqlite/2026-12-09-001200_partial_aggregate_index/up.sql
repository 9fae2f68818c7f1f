-- Only aggregated rows have an `aggregate_key`: the unique index holds those alone, as on
-- PostgreSQL, instead of an entry for every audit row (each appended row cost one more index
-- write; a webhook's `webhook_validated` row is one per event). The upsert names the predicate
-- (ON CONFLICT (aggregate_key) WHERE aggregate_key IS NOT NULL).
DROP INDEX security_events_aggregate;
CREATE UNIQUE INDEX security_events_aggregate ON security_events (aggregate_key)
    WHERE aggregate_key IS NOT NULL;
