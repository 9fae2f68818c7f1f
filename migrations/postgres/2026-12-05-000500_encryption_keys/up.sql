-- When each encryption key id was first seen (configured at start-up, or sealing its first
-- value): the age the dashboard and `validate-secrets` compare with KEY_ROTATION_DAYS.
CREATE TABLE encryption_keys (
    key_id TEXT PRIMARY KEY NOT NULL,
    first_seen_at TIMESTAMP NOT NULL
);
