ALTER TABLE security_events DROP COLUMN request_id;
