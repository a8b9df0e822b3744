-- Drops the tax rates table.
DROP TABLE tax_rates;
