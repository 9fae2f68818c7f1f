-- Tamper evidence for the audit log (see audit::chain): every row appended since this migration
-- belongs to a chain (one per instance, `INSTANCE_ID`), has a sequence number within it and a
-- SHA-256 hash over its content and the previous row's hash. Rows written before it keep NULLs
-- (reported by `tollgate audit verify` as predating the chain).
ALTER TABLE security_events ADD COLUMN chain_id TEXT;
ALTER TABLE security_events ADD COLUMN chain_seq BIGINT;
ALTER TABLE security_events ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX security_events_chain ON security_events (chain_id, chain_seq);
-- Each chain's head: locked and advanced in the same transaction as the rows it appends (so
-- writers of one chain take turns and a rolled-back append leaves no gap), and its checkpoint:
-- the sequence and hash of the last row retention pruned, where verification resumes.
CREATE TABLE audit_chains (
    chain_id TEXT PRIMARY KEY,
    last_sequence BIGINT NOT NULL,
    last_hash TEXT NOT NULL,
    checkpoint_sequence BIGINT NOT NULL,
    checkpoint_hash TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
-- Retention deletes idempotency records by age.
CREATE INDEX stripe_operations_created_at ON stripe_operations (created_at);
