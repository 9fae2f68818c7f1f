DROP TABLE security_events;
DROP TABLE sessions;
DROP TABLE users;
