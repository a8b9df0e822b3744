-- Seeds the standard plans (a dotted version: 1.1 runs after 1 and before 2).
INSERT INTO plans (code, name, monthly_price, max_users, max_projects, dedicated_database, is_public) VALUES
    ('free',       'Free',          0.00,    3,    2, false, true),
    ('starter',    'Starter',      29.00,   10,   20, false, true),
    ('business',   'Business',    199.00,  100,  NULL, false, true),
    ('enterprise', 'Enterprise', 1499.00, NULL,  NULL, true,  false);
