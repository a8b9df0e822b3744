-- Drops tasks.
DROP TABLE tasks;
