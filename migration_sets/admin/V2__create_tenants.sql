-- Creates the tenants registry: one row per customer, its region, plan and lifecycle status.
CREATE TABLE tenants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug          text NOT NULL CHECK (slug ~ '^[a-z][a-z0-9_]{0,47}$'),
    name          text NOT NULL CHECK (length(btrim(name)) > 0),
    region        text NOT NULL,
    plan          text NOT NULL REFERENCES plans (code) ON UPDATE CASCADE,
    status        text NOT NULL DEFAULT 'provisioning'
                  CHECK (status IN ('provisioning', 'active', 'suspended', 'archived')),
    isolation     text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared', 'dedicated')),
    suspended_at  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenants_slug_key UNIQUE (slug),
    CONSTRAINT tenants_suspended_at_check CHECK ((status = 'suspended') = (suspended_at IS NOT NULL))
);

CREATE INDEX tenants_plan_idx ON tenants (plan);
CREATE INDEX tenants_region_status_idx ON tenants (region, status);
