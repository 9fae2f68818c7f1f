-- How many rows a table holds, kept by the database itself: the admin console shows the
-- number of accounts on every visit, and count(*) over a million rows reads the whole table.
-- SQLite has row triggers only; each adds or takes away one.
CREATE TABLE row_counts (
    name TEXT PRIMARY KEY NOT NULL,
    total BIGINT NOT NULL
);
INSERT INTO row_counts (name, total) SELECT 'users', count(*) FROM users;

CREATE TRIGGER users_counted_insert AFTER INSERT ON users
BEGIN
    UPDATE row_counts SET total = total + 1 WHERE name = 'users';
END;
CREATE TRIGGER users_counted_delete AFTER DELETE ON users
BEGIN
    UPDATE row_counts SET total = total - 1 WHERE name = 'users';
END;
