-- The request an audit event came from (the `X-Request-Id` Tollgate answered it with), so an
-- operator can find its log lines; NULL for work no request caused (start-up, the CLI).
ALTER TABLE security_events ADD COLUMN request_id TEXT;
