-- Creates the append-only audit log of control-plane actions, with a jsonb payload.
CREATE TABLE audit_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    action       text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    tenant_id    bigint REFERENCES tenants (id) ON DELETE SET NULL,
    target_type  text,
    target_id    text,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(payload) = 'object')
);

CREATE INDEX audit_log_created_at_idx ON audit_log (created_at);
CREATE INDEX audit_log_tenant_id_created_at_idx ON audit_log (tenant_id, created_at) WHERE tenant_id IS NOT NULL;
CREATE INDEX audit_log_payload_idx ON audit_log USING gin (payload jsonb_path_ops);
