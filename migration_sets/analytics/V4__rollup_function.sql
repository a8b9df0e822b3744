-- Adds refresh_daily_event_counts(day): recomputes one day of the rollup from the raw events (UTC days).
CREATE FUNCTION refresh_daily_event_counts(p_day date) RETURNS integer
LANGUAGE plpgsql
SET search_path = ${schema}, pg_temp
AS $$
DECLARE
    affected integer;
BEGIN
    DELETE FROM daily_event_counts WHERE day = p_day;
    INSERT INTO daily_event_counts (day, tenant_slug, event_name, event_count, unique_users)
    SELECT p_day, e.tenant_slug, e.event_name, count(*), count(DISTINCT e.user_ref)
      FROM events e
     WHERE e.occurred_at >= (p_day::timestamp AT TIME ZONE 'UTC')
       AND e.occurred_at <  ((p_day + 1)::timestamp AT TIME ZONE 'UTC')
     GROUP BY e.tenant_slug, e.event_name;
    GET DIAGNOSTICS affected = ROW_COUNT;
    RETURN affected;
END;
$$;
