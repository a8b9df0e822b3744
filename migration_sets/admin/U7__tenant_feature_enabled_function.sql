-- Drops tenant_feature_enabled().
DROP FUNCTION tenant_feature_enabled(text, text);
