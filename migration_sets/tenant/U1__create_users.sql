-- Drops the users table and removes the tenant label from the schema.
DROP TABLE users;

DO $$
BEGIN
    -- A dedicated tenant database uses public, whose stock comment is restored.
    IF '${schema}' = 'public' THEN
        COMMENT ON SCHEMA public IS 'standard public schema';
    ELSE
        COMMENT ON SCHEMA ${schema} IS NULL;
    END IF;
END;
$$;
