-- Drops the time zones reference table.
DROP TABLE timezones;
