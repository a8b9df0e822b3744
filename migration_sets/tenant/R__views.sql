-- Repeatable: the project_overview reporting view (re-applied whenever this file changes).
-- It reads only users and projects (versions 1 and 2), so undoing later versions never breaks it;
-- U2 drops it before dropping projects.
CREATE OR REPLACE VIEW project_overview AS
SELECT p.id                     AS project_id,
       p.key                    AS project_key,
       p.name                   AS project_name,
       p.archived_at IS NOT NULL AS is_archived,
       u.id                     AS owner_id,
       u.full_name              AS owner_name,
       u.email                  AS owner_email,
       u.is_active              AS owner_is_active,
       p.created_at
FROM projects p
JOIN users u ON u.id = p.owner_id;
