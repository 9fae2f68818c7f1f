-- Repeated refusals are counted on one row instead of one row each (see audit::write_many):
-- `occurred_at` is when the first was seen, `last_seen_at` the latest, `count` how many, and
-- `aggregate_key` what makes two of them the same (kind, client, actor, reason, time slot).
-- It is unique, so concurrent repeats meet on one row (ON CONFLICT); the index leaves out the
-- events that are not aggregated (NULL), so they cost no extra index write.
ALTER TABLE security_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE security_events ADD COLUMN last_seen_at TIMESTAMP;
UPDATE security_events SET last_seen_at = occurred_at;
ALTER TABLE security_events ALTER COLUMN last_seen_at SET NOT NULL;
ALTER TABLE security_events ADD COLUMN aggregate_key TEXT;
DROP INDEX security_events_kind;
CREATE INDEX security_events_kind ON security_events (kind, last_seen_at);
CREATE UNIQUE INDEX security_events_aggregate ON security_events (aggregate_key)
    WHERE aggregate_key IS NOT NULL;
