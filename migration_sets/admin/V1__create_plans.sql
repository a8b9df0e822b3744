-- Creates the plans catalogue: the commercial plans a tenant can subscribe to.
CREATE TABLE plans (
    code                text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]*$'),
    name                text NOT NULL,
    monthly_price       numeric(10, 2) NOT NULL DEFAULT 0 CHECK (monthly_price >= 0),
    max_users           integer CHECK (max_users IS NULL OR max_users > 0),
    max_projects        integer CHECK (max_projects IS NULL OR max_projects > 0),
    dedicated_database  boolean NOT NULL DEFAULT false,
    is_public           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE plans IS 'Commercial plans; max_users and max_projects NULL mean unlimited.';
