-- Creates the ISO 4217 currencies reference table with the currencies the platform bills in.
CREATE TABLE currencies (
    code         char(3) PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    name         text NOT NULL,
    symbol       text NOT NULL,
    minor_units  smallint NOT NULL DEFAULT 2 CHECK (minor_units BETWEEN 0 AND 4)
);

INSERT INTO currencies (code, name, symbol, minor_units) VALUES
    ('USD', 'US Dollar',         '$',   2),
    ('CAD', 'Canadian Dollar',   'CA$', 2),
    ('BRL', 'Brazilian Real',    'R$',  2),
    ('EUR', 'Euro',              '€',   2),
    ('GBP', 'Pound Sterling',    '£',   2),
    ('CHF', 'Swiss Franc',       'CHF', 2),
    ('JPY', 'Yen',               '¥',   0),
    ('SGD', 'Singapore Dollar',  'S$',  2),
    ('AUD', 'Australian Dollar', 'A$',  2),
    ('INR', 'Indian Rupee',      '₹',   2);
