-- Drops the countries reference table.
DROP TABLE countries;
