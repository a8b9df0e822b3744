-- Creates the single-row regional_settings table, seeded with this database's region and its defaults.
CREATE TABLE regional_settings (
    singleton         boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    region            text NOT NULL CHECK (length(region) > 0),
    default_currency  char(3) NOT NULL REFERENCES currencies (code),
    default_timezone  text NOT NULL REFERENCES timezones (name),
    default_country   char(2) NOT NULL REFERENCES countries (code),
    data_residency    text NOT NULL CHECK (data_residency IN ('us', 'eu', 'apac', 'global')),
    created_at        timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE regional_settings IS 'Defaults of the ${region} ${database_type} database';

INSERT INTO regional_settings (region, default_currency, default_timezone, default_country, data_residency)
SELECT r.region,
       CASE WHEN r.region LIKE 'eu-%' THEN 'EUR'
            WHEN r.region LIKE 'ap-%' THEN 'SGD'
            ELSE 'USD' END,
       CASE WHEN r.region LIKE 'us-west%' THEN 'America/Los_Angeles'
            WHEN r.region LIKE 'us-%' THEN 'America/New_York'
            WHEN r.region LIKE 'eu-%' THEN 'Europe/Dublin'
            WHEN r.region LIKE 'ap-%' THEN 'Asia/Singapore'
            ELSE 'UTC' END,
       CASE WHEN r.region LIKE 'eu-%' THEN 'IE'
            WHEN r.region LIKE 'ap-%' THEN 'SG'
            ELSE 'US' END,
       CASE WHEN r.region LIKE 'us-%' THEN 'us'
            WHEN r.region LIKE 'eu-%' THEN 'eu'
            WHEN r.region LIKE 'ap-%' THEN 'apac'
            ELSE 'global' END
FROM (SELECT coalesce(nullif('${region}', ''), 'global') AS region) AS r;
