DROP TRIGGER users_counted_delete;
DROP TRIGGER users_counted_insert;
DROP TABLE row_counts;
