-- Repeated refusals are counted on one row instead of one row each (see audit::write_many):
-- `occurred_at` is when the first was seen, `last_seen_at` the latest, `count` how many, and
-- `aggregate_key` what makes two of them the same (kind, client, actor, reason, time slot).
-- It is unique, so concurrent repeats meet on one row (ON CONFLICT); events that are not
-- aggregated leave it NULL, and NULLs never conflict. (PostgreSQL's index is partial; diesel
-- cannot name a partial index in SQLite's ON CONFLICT.)
ALTER TABLE security_events ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
-- SQLite cannot add a NOT NULL column without a default: every row gets its real value below,
-- and the writer always sets it.
ALTER TABLE security_events ADD COLUMN last_seen_at TIMESTAMP NOT NULL DEFAULT '1970-01-01 00:00:00';
UPDATE security_events SET last_seen_at = occurred_at;
ALTER TABLE security_events ADD COLUMN aggregate_key TEXT;
DROP INDEX security_events_kind;
CREATE INDEX security_events_kind ON security_events (kind, last_seen_at);
CREATE UNIQUE INDEX security_events_aggregate ON security_events (aggregate_key);
