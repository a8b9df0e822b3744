-- Creates the raw product events table (jsonb properties) with a BRIN index on occurred_at.
CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_slug  text NOT NULL,
    event_name   text NOT NULL CHECK (event_name ~ '^[a-z][a-z0-9_.]*$'),
    user_ref     text,
    session_id   uuid,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    properties   jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(properties) = 'object')
);

-- Events arrive roughly in time order, so a BRIN index stays tiny and serves time-range scans.
CREATE INDEX events_occurred_at_brin ON events USING brin (occurred_at) WITH (pages_per_range = 32);
CREATE INDEX events_tenant_name_occurred_at_idx ON events (tenant_slug, event_name, occurred_at);
CREATE INDEX events_properties_idx ON events USING gin (properties jsonb_path_ops);
