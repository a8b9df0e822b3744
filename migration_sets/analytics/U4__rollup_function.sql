-- Drops refresh_daily_event_counts().
DROP FUNCTION refresh_daily_event_counts(date);
