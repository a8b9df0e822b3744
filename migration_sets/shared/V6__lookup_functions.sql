-- Adds lookup functions: the tax rate of a country on a date and the currency of a country.
CREATE FUNCTION tax_rate_for(p_country char(2), p_on date DEFAULT current_date) RETURNS numeric
LANGUAGE sql
STABLE
SET search_path = ${schema}, pg_temp
AS $$
    SELECT coalesce(sum(tr.rate), 0)
      FROM tax_rates tr
     WHERE tr.country_code = upper(p_country)
       AND tr.valid_from <= p_on
       AND (tr.valid_to IS NULL OR tr.valid_to > p_on);
$$;

CREATE FUNCTION currency_for_country(p_country char(2)) RETURNS char(3)
LANGUAGE sql
STABLE
SET search_path = ${schema}, pg_temp
AS $$
    SELECT coalesce(
        (SELECT c.currency_code FROM countries c WHERE c.code = upper(p_country)),
        (SELECT rs.default_currency FROM regional_settings rs)
    );
$$;
