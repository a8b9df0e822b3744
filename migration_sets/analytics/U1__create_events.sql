-- Drops the raw events table.
DROP TABLE events;
