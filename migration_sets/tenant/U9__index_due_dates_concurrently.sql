-- infra:transactional=false
-- Drops the due-date indexes without blocking writes (DROP INDEX CONCURRENTLY).
DROP INDEX CONCURRENTLY IF EXISTS invoices_unpaid_due_date_idx;

DROP INDEX CONCURRENTLY IF EXISTS tasks_open_due_date_idx;
