-- Creates tasks: belong to a project, optionally assigned to a user, with a status and a priority.
CREATE TABLE tasks (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id   bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    assignee_id  bigint REFERENCES users (id) ON DELETE SET NULL,
    reporter_id  bigint NOT NULL REFERENCES users (id),
    title        text NOT NULL CHECK (length(btrim(title)) > 0),
    status       text NOT NULL DEFAULT 'todo'
                 CHECK (status IN ('todo', 'in_progress', 'blocked', 'done', 'cancelled')),
    priority     smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 4),
    due_date     date,
    completed_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tasks_completed_at_check CHECK ((status = 'done') = (completed_at IS NOT NULL))
);

CREATE INDEX tasks_project_id_status_idx ON tasks (project_id, status);
CREATE INDEX tasks_assignee_id_idx ON tasks (assignee_id) WHERE assignee_id IS NOT NULL;
CREATE INDEX tasks_reporter_id_idx ON tasks (reporter_id);
