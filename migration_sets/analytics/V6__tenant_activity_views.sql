-- Creates the daily_active_users view and the tenant_activity_30d materialized view (refreshable concurrently).
CREATE VIEW daily_active_users AS
SELECT (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
       e.tenant_slug,
       count(DISTINCT e.user_ref)               AS active_users
FROM events e
WHERE e.user_ref IS NOT NULL
GROUP BY 1, 2;

CREATE MATERIALIZED VIEW tenant_activity_30d AS
SELECT d.tenant_slug,
       sum(d.event_count)  AS events,
       max(d.unique_users) AS peak_daily_users,
       max(d.day)          AS last_active_day
FROM daily_event_counts d
WHERE d.day > current_date - 30
GROUP BY d.tenant_slug
WITH DATA;

-- A unique index lets REFRESH MATERIALIZED VIEW CONCURRENTLY run without blocking readers.
CREATE UNIQUE INDEX tenant_activity_30d_tenant_slug_key ON tenant_activity_30d (tenant_slug);
