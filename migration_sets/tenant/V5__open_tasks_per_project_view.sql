-- Creates the open_tasks_per_project view: open, overdue and urgent task counts per active project.
CREATE VIEW open_tasks_per_project AS
SELECT p.id                                                             AS project_id,
       p.key                                                            AS project_key,
       p.name                                                           AS project_name,
       count(t.id)                                                      AS open_tasks,
       count(t.id) FILTER (WHERE t.due_date < current_date)             AS overdue_tasks,
       count(t.id) FILTER (WHERE t.priority = 1)                        AS urgent_tasks,
       count(t.id) FILTER (WHERE t.assignee_id IS NULL)                 AS unassigned_tasks
FROM projects p
LEFT JOIN tasks t ON t.project_id = p.id AND t.status IN ('todo', 'in_progress', 'blocked')
WHERE p.archived_at IS NULL
GROUP BY p.id, p.key, p.name;
