DROP INDEX stripe_operations_created_at;
DROP TABLE audit_chains;
DROP INDEX security_events_chain;
ALTER TABLE security_events DROP COLUMN hash;
ALTER TABLE security_events DROP COLUMN chain_seq;
ALTER TABLE security_events DROP COLUMN chain_id;
