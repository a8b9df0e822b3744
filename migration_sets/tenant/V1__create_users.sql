-- Creates the tenant's users (case-insensitive unique email) and labels the schema with the tenant.
COMMENT ON SCHEMA ${schema} IS 'Tenant ${tenant_slug}';

CREATE TABLE users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email       text NOT NULL CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+$'),
    full_name   text NOT NULL,
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member', 'guest')),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- No citext (extensions may be unavailable): uniqueness on lower(email) instead.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
