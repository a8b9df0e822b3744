-- Drops projects (and the repeatable project_overview view that reads it).
DROP VIEW IF EXISTS project_overview;
DROP TABLE projects;
