-- Drops the regional_settings table.
DROP TABLE regional_settings;
