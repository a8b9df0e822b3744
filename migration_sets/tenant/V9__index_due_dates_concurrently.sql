-- infra:transactional=false
-- Indexes open tasks and unpaid invoices by due date without blocking writes (CREATE INDEX CONCURRENTLY).
-- Runs statement by statement in autocommit, so IF NOT EXISTS keeps a re-run after a partial failure safe.
CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_open_due_date_idx
    ON tasks (due_date)
    WHERE status IN ('todo', 'in_progress', 'blocked');

CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_unpaid_due_date_idx
    ON invoices (due_date)
    WHERE status = 'issued';
