-- Creates page_views, range-partitioned by day with yearly partitions for 2026 and 2027 and a default.
CREATE TABLE page_views (
    viewed_on    date NOT NULL,
    tenant_slug  text NOT NULL,
    path         text NOT NULL,
    session_id   uuid,
    view_count   integer NOT NULL DEFAULT 1 CHECK (view_count > 0),
    load_ms      integer CHECK (load_ms IS NULL OR load_ms >= 0)
) PARTITION BY RANGE (viewed_on);

CREATE TABLE page_views_y2026 PARTITION OF page_views
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE TABLE page_views_y2027 PARTITION OF page_views
    FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');

CREATE TABLE page_views_default PARTITION OF page_views DEFAULT;

CREATE INDEX page_views_tenant_viewed_on_idx ON page_views (tenant_slug, viewed_on);
