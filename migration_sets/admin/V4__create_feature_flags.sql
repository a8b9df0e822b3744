-- Creates feature flags with their defaults and per-tenant overrides.
CREATE TABLE feature_flags (
    key                 text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_.]*$'),
    description         text NOT NULL,
    enabled_by_default  boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_feature_flags (
    tenant_id   bigint NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    flag_key    text NOT NULL REFERENCES feature_flags (key) ON DELETE CASCADE,
    enabled     boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, flag_key)
);

CREATE INDEX tenant_feature_flags_flag_key_idx ON tenant_feature_flags (flag_key);

INSERT INTO feature_flags (key, description, enabled_by_default) VALUES
    ('billing.invoices_v2',  'New invoice editor with line-level tax', false),
    ('projects.gantt',       'Gantt chart on the project page',       false),
    ('tasks.bulk_edit',      'Edit several tasks at once',            true),
    ('auth.sso',             'SAML/OIDC single sign-on',              false);
