-- Removes tasks.estimate_points.
ALTER TABLE tasks DROP COLUMN estimate_points;
