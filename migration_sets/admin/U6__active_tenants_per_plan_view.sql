-- Drops the active_tenants_per_plan view.
DROP VIEW active_tenants_per_plan;
