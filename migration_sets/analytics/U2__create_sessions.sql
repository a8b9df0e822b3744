-- Drops the sessions table.
DROP TABLE sessions;
