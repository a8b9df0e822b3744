-- Adds events.source (default 'web'): which client sent the event.
ALTER TABLE events
    ADD COLUMN source text NOT NULL DEFAULT 'web'
    CONSTRAINT events_source_check CHECK (source IN ('web', 'ios', 'android', 'api', 'server'));
