-- Drops the currencies reference table.
DROP TABLE currencies;
