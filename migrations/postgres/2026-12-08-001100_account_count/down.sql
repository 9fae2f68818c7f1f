DROP TRIGGER users_counted_truncate ON users;
DROP TRIGGER users_counted_delete ON users;
DROP TRIGGER users_counted_insert ON users;
DROP FUNCTION users_counted();
DROP TABLE row_counts;
