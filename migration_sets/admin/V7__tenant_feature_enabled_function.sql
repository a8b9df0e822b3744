-- Adds tenant_feature_enabled(slug, flag): the tenant's override, else the flag's default.
CREATE FUNCTION tenant_feature_enabled(p_slug text, p_flag text) RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ${schema}, pg_temp
AS $$
    SELECT coalesce(
        (SELECT tff.enabled
           FROM tenant_feature_flags tff
           JOIN tenants t ON t.id = tff.tenant_id
          WHERE t.slug = p_slug AND tff.flag_key = p_flag),
        (SELECT f.enabled_by_default FROM feature_flags f WHERE f.key = p_flag),
        false
    );
$$;
