-- Drops the feature flags and their per-tenant overrides.
DROP TABLE tenant_feature_flags;
DROP TABLE feature_flags;
