-- Periodic jobs that must run once per period across every instance (retention, the
-- reservation sweep): the instance that takes a job's lease runs it; `runs` counts the runs.
CREATE TABLE job_leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    runs BIGINT NOT NULL DEFAULT 0
);
