-- Drops the tenant_activity_30d materialized view and the daily_active_users view.
DROP MATERIALIZED VIEW tenant_activity_30d;
DROP VIEW daily_active_users;
