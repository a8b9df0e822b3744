-- Creates the active_tenants_per_plan view: active tenants and their regions for every plan.
CREATE VIEW active_tenants_per_plan AS
SELECT p.code                                          AS plan,
       p.name                                          AS plan_name,
       count(t.id)                                     AS active_tenants,
       coalesce(array_agg(DISTINCT t.region ORDER BY t.region)
                FILTER (WHERE t.id IS NOT NULL), '{}') AS regions,
       count(t.id) * p.monthly_price                   AS monthly_revenue
FROM plans p
LEFT JOIN tenants t ON t.plan = p.code AND t.status = 'active'
GROUP BY p.code, p.name, p.monthly_price;
