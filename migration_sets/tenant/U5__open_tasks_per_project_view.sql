-- Drops the open_tasks_per_project view.
DROP VIEW open_tasks_per_project;
