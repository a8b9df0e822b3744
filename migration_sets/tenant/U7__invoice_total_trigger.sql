-- Removes the invoice total trigger and its function (totals keep their last values).
DROP TRIGGER invoice_lines_refresh_total ON invoice_lines;
DROP FUNCTION refresh_invoice_total();
