-- Creates the sessions table: one row per user session with its device and duration.
CREATE TABLE sessions (
    id            uuid PRIMARY KEY,
    tenant_slug   text NOT NULL,
    user_ref      text,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    device        text NOT NULL DEFAULT 'web' CHECK (device IN ('web', 'ios', 'android', 'desktop')),
    country_code  char(2),
    page_count    integer NOT NULL DEFAULT 0 CHECK (page_count >= 0),
    CONSTRAINT sessions_period_check CHECK (ended_at IS NULL OR ended_at >= started_at)
);

CREATE INDEX sessions_tenant_started_at_idx ON sessions (tenant_slug, started_at);
CREATE INDEX sessions_open_idx ON sessions (started_at) WHERE ended_at IS NULL;
