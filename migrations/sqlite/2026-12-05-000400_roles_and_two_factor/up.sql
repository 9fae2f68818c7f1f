-- A read-only `support` role, and admin two-factor sign-in (TOTP).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE users_with_support (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'support', 'admin')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP
);
INSERT INTO users_with_support (id, email, password_hash, role, created_at, updated_at, last_login_at)
    SELECT id, email, password_hash, role, created_at, updated_at, last_login_at FROM users;
DROP TABLE users;
ALTER TABLE users_with_support RENAME TO users;

-- One TOTP secret per account, sealed with AES-256-GCM (bound to the account). A row whose
-- confirmed_at is NULL is an enrolment in progress; last_used_step refuses a replayed code.
CREATE TABLE two_factor (
    user_id BIGINT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret BLOB NOT NULL,
    key_id TEXT NOT NULL,
    confirmed_at TIMESTAMP,
    last_used_step BIGINT,
    -- While unconfirmed: a SHA-256 of the random value the enrolling session holds. Only that
    -- session is shown the secret and may confirm it; another session gets a new secret.
    pending_binding TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX two_factor_key_id ON two_factor (key_id);

-- One-time recovery codes: only a peppered HMAC of each code is kept.
CREATE TABLE recovery_codes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX recovery_codes_user_id ON recovery_codes (user_id);
PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
