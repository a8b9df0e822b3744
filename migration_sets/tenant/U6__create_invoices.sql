-- Drops invoice lines and invoices.
DROP TABLE invoice_lines;
DROP TABLE invoices;
