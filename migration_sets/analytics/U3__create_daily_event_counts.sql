-- Drops the daily_event_counts rollup.
DROP TABLE daily_event_counts;
