-- Creates the daily_event_counts rollup: events and distinct users per tenant, event and day.
CREATE TABLE daily_event_counts (
    day           date NOT NULL,
    tenant_slug   text NOT NULL,
    event_name    text NOT NULL,
    event_count   bigint NOT NULL CHECK (event_count >= 0),
    unique_users  bigint NOT NULL CHECK (unique_users >= 0),
    refreshed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (day, tenant_slug, event_name),
    CONSTRAINT daily_event_counts_users_check CHECK (unique_users <= event_count)
);

CREATE INDEX daily_event_counts_tenant_day_idx ON daily_event_counts (tenant_slug, day);
