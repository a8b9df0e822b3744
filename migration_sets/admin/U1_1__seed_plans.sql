-- Removes the standard plans seeded by version 1.1.
DELETE FROM plans WHERE code IN ('free', 'starter', 'business', 'enterprise');
