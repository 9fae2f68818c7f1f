ALTER TABLE service_tokens DROP COLUMN hash_key_id;
DROP INDEX billing_customers_index_key_id;
ALTER TABLE billing_customers DROP COLUMN index_key_id;
