-- How many rows a table holds, kept by the database itself: the admin console shows the
-- number of accounts on every visit, and count(*) over a million rows is a heap scan.
-- Statement triggers add what each INSERT added and take away what each DELETE removed (a
-- bulk insert updates the count once); TRUNCATE sets it to zero. The lock keeps a concurrent
-- sign-up from landing between the count below and the triggers.
LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE;

CREATE TABLE row_counts (
    name TEXT PRIMARY KEY,
    total BIGINT NOT NULL
);
INSERT INTO row_counts (name, total) SELECT 'users', count(*) FROM users;

CREATE FUNCTION users_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE row_counts SET total = total + (SELECT count(*) FROM added) WHERE name = 'users';
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE row_counts SET total = total - (SELECT count(*) FROM removed) WHERE name = 'users';
    ELSE
        UPDATE row_counts SET total = 0 WHERE name = 'users';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_counted_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION users_counted();
CREATE TRIGGER users_counted_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION users_counted();
CREATE TRIGGER users_counted_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION users_counted();
