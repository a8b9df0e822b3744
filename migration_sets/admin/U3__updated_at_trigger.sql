-- Removes the updated_at triggers and set_updated_at().
DROP TRIGGER tenants_set_updated_at ON tenants;
DROP TRIGGER plans_set_updated_at ON plans;
DROP FUNCTION set_updated_at();
