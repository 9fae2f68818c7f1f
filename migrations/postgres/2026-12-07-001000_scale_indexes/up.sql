-- Emails compare byte by byte ("C"), as on SQLite: the unique index then serves the admin
-- customer search (a prefix is a range of it) and its email order, whatever the database's
-- default collation. Emails are stored lower-case; the unique index is rebuilt.
ALTER TABLE users ALTER COLUMN email TYPE TEXT COLLATE "C";

-- The audit log's filters (kind, actor, address) read the newest matches first, a page at a
-- time: each by an index in id order, never a sort of every match.
CREATE INDEX security_events_kind_id ON security_events (kind, id);
CREATE INDEX security_events_actor_id ON security_events (actor, id);
CREATE INDEX security_events_ip_id ON security_events (ip, id);

-- The security dashboard's hourly counts, kept by every audit append in its transaction (per
-- severity and chain lane: a lane's appenders hold its head, so no two update one row), and
-- filled here from the rows already logged: its charts read hours, not millions of rows.
CREATE TABLE security_event_hours (
    hour TIMESTAMP NOT NULL,
    severity TEXT NOT NULL,
    lane TEXT NOT NULL,
    occurrences BIGINT NOT NULL,
    PRIMARY KEY (hour, severity, lane)
);
INSERT INTO security_event_hours (hour, severity, lane, occurrences)
SELECT date_trunc('hour', occurred_at), severity, COALESCE(chain_id, ''), SUM(count)
FROM security_events
GROUP BY 1, 2, 3;
