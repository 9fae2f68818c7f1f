PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
DROP TABLE recovery_codes;
DROP TABLE two_factor;
CREATE TABLE users_without_support (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'customer' CHECK (role IN ('customer', 'admin')),
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    last_login_at TIMESTAMP
);
INSERT INTO users_without_support (id, email, password_hash, role, created_at, updated_at, last_login_at)
    SELECT id, email, password_hash, CASE role WHEN 'support' THEN 'customer' ELSE role END,
           created_at, updated_at, last_login_at FROM users;
DROP TABLE users;
ALTER TABLE users_without_support RENAME TO users;
COMMIT;
PRAGMA foreign_keys = ON;
