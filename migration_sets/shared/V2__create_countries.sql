-- Creates the ISO 3166 countries reference table with each country's currency.
CREATE TABLE countries (
    code          char(2) PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    name          text NOT NULL UNIQUE,
    currency_code char(3) NOT NULL REFERENCES currencies (code),
    calling_code  text NOT NULL CHECK (calling_code ~ '^\+[0-9]{1,4}$')
);

CREATE INDEX countries_currency_code_idx ON countries (currency_code);

INSERT INTO countries (code, name, currency_code, calling_code) VALUES
    ('US', 'United States',  'USD', '+1'),
    ('CA', 'Canada',         'CAD', '+1'),
    ('BR', 'Brazil',         'BRL', '+55'),
    ('IE', 'Ireland',        'EUR', '+353'),
    ('DE', 'Germany',        'EUR', '+49'),
    ('FR', 'France',         'EUR', '+33'),
    ('GB', 'United Kingdom', 'GBP', '+44'),
    ('CH', 'Switzerland',    'CHF', '+41'),
    ('JP', 'Japan',          'JPY', '+81'),
    ('SG', 'Singapore',      'SGD', '+65'),
    ('AU', 'Australia',      'AUD', '+61'),
    ('IN', 'India',          'INR', '+91');
