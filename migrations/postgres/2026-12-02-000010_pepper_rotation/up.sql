-- Which TOKEN_PEPPER (its id, as `rotate-key --check` shows it) made each digest, so a pepper
-- rotation can tell stale digests from current ones. NULL: made before ids were recorded (a
-- blind index then was keyed by the pepper itself); `rotate-key` rebuilds those indexes, and a
-- service token's id is recorded the next time it is used.
ALTER TABLE billing_customers ADD COLUMN index_key_id TEXT;
CREATE INDEX billing_customers_index_key_id ON billing_customers (index_key_id);
ALTER TABLE service_tokens ADD COLUMN hash_key_id TEXT;
