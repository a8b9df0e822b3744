-- Adds tasks.estimate_points (default 0) for story-point estimates.
ALTER TABLE tasks
    ADD COLUMN estimate_points integer NOT NULL DEFAULT 0
    CONSTRAINT tasks_estimate_points_check CHECK (estimate_points BETWEEN 0 AND 100);
