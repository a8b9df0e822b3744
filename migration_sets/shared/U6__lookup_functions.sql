-- Drops the lookup functions.
DROP FUNCTION currency_for_country(char);
DROP FUNCTION tax_rate_for(char, date);
