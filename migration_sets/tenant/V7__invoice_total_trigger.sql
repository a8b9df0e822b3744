-- Adds the trigger keeping invoices.total equal to the sum of its lines' amounts.
CREATE FUNCTION refresh_invoice_total() RETURNS trigger
LANGUAGE plpgsql
SET search_path = ${schema}, pg_temp
AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE invoices i
           SET total = coalesce((SELECT sum(l.amount) FROM invoice_lines l WHERE l.invoice_id = i.id), 0)
         WHERE i.id = NEW.invoice_id;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.invoice_id IS DISTINCT FROM NEW.invoice_id) THEN
        UPDATE invoices i
           SET total = coalesce((SELECT sum(l.amount) FROM invoice_lines l WHERE l.invoice_id = i.id), 0)
         WHERE i.id = OLD.invoice_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER invoice_lines_refresh_total
    AFTER INSERT OR UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION refresh_invoice_total();

-- Bring the totals of existing invoices in line with their lines.
UPDATE invoices i
   SET total = s.lines_total
  FROM (SELECT inv.id, coalesce(sum(l.amount), 0) AS lines_total
          FROM invoices inv
          LEFT JOIN invoice_lines l ON l.invoice_id = inv.id
         GROUP BY inv.id) AS s
 WHERE s.id = i.id
   AND i.total IS DISTINCT FROM s.lines_total;
