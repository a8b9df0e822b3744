-- Creates the tax rates per country with validity periods, seeded with the standard VAT/GST rates.
CREATE TABLE tax_rates (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    country_code  char(2) NOT NULL REFERENCES countries (code),
    name          text NOT NULL,
    rate          numeric(6, 4) NOT NULL CHECK (rate >= 0 AND rate < 1),
    valid_from    date NOT NULL,
    valid_to      date,
    CONSTRAINT tax_rates_period_check CHECK (valid_to IS NULL OR valid_to > valid_from),
    CONSTRAINT tax_rates_country_name_from_key UNIQUE (country_code, name, valid_from)
);

INSERT INTO tax_rates (country_code, name, rate, valid_from, valid_to) VALUES
    ('US', 'Sales tax (collected by state)', 0.0000, '2000-01-01', NULL),
    ('CA', 'GST',                            0.0500, '2008-01-01', NULL),
    ('BR', 'ISS (services)',                 0.0500, '2004-01-01', NULL),
    ('IE', 'VAT standard',                   0.2300, '2012-01-01', NULL),
    ('DE', 'VAT standard',                   0.1600, '2020-07-01', '2021-01-01'),
    ('DE', 'VAT standard',                   0.1900, '2021-01-01', NULL),
    ('FR', 'VAT standard',                   0.2000, '2014-01-01', NULL),
    ('GB', 'VAT standard',                   0.2000, '2011-01-04', NULL),
    ('CH', 'VAT standard',                   0.0810, '2024-01-01', NULL),
    ('JP', 'Consumption tax',                0.1000, '2019-10-01', NULL),
    ('SG', 'GST',                            0.0900, '2024-01-01', NULL),
    ('AU', 'GST',                            0.1000, '2000-07-01', NULL),
    ('IN', 'GST (software services)',        0.1800, '2017-07-01', NULL);
