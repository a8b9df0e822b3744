-- Creates projects, each with a short unique key and an owning user.
CREATE TABLE projects (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text NOT NULL CHECK (key ~ '^[A-Z][A-Z0-9]{1,9}$'),
    name         text NOT NULL CHECK (length(btrim(name)) > 0),
    description  text NOT NULL DEFAULT '',
    owner_id     bigint NOT NULL REFERENCES users (id),
    archived_at  timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT projects_key_key UNIQUE (key)
);

CREATE INDEX projects_owner_id_idx ON projects (owner_id);
