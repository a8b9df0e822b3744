-- Drops the tenants registry.
DROP TABLE tenants;
