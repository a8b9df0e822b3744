-- Removes events.source.
ALTER TABLE events DROP COLUMN source;
