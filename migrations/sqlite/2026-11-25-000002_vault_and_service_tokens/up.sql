-- Customers' own provider API keys, sealed with AES-256-GCM (bound to user and provider).
CREATE TABLE byok_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    secret BLOB NOT NULL,
    key_id TEXT NOT NULL,
    masked TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    UNIQUE (user_id, provider)
);
CREATE INDEX byok_keys_key_id ON byok_keys (key_id);

-- Tokens for internal services: only an HMAC of each token is kept.
CREATE TABLE service_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    display_id TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP,
    revoked_at TIMESTAMP
);

-- Operator switches shared by every instance (e.g. the BYOK lease kill switch).
CREATE TABLE settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
