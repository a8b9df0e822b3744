-- Drops the audit log.
DROP TABLE audit_log;
