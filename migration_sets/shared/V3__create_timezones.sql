-- Creates the IANA time zones offered in user settings, each tied to a country.
CREATE TABLE timezones (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z_]+(/[A-Za-z_+-]+)*$'),
    country_code  char(2) REFERENCES countries (code),
    display_name  text NOT NULL
);

CREATE INDEX timezones_country_code_idx ON timezones (country_code);

INSERT INTO timezones (name, country_code, display_name) VALUES
    ('UTC',                 NULL, 'Coordinated Universal Time'),
    ('America/New_York',    'US', 'Eastern Time (US)'),
    ('America/Chicago',     'US', 'Central Time (US)'),
    ('America/Los_Angeles', 'US', 'Pacific Time (US)'),
    ('America/Toronto',     'CA', 'Eastern Time (Canada)'),
    ('America/Sao_Paulo',   'BR', 'Brasilia Time'),
    ('Europe/Dublin',       'IE', 'Irish Time'),
    ('Europe/Berlin',       'DE', 'Central European Time (Germany)'),
    ('Europe/Paris',        'FR', 'Central European Time (France)'),
    ('Europe/London',       'GB', 'UK Time'),
    ('Europe/Zurich',       'CH', 'Central European Time (Switzerland)'),
    ('Asia/Tokyo',          'JP', 'Japan Standard Time'),
    ('Asia/Singapore',      'SG', 'Singapore Time'),
    ('Australia/Sydney',    'AU', 'Australian Eastern Time'),
    ('Asia/Kolkata',        'IN', 'India Standard Time');
