DROP TABLE settings;
DROP TABLE service_tokens;
DROP TABLE byok_keys;
