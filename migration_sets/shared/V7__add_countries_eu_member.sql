-- Adds countries.eu_member (default false) and flags the EU member states, for reverse-charge VAT.
ALTER TABLE countries ADD COLUMN eu_member boolean NOT NULL DEFAULT false;

UPDATE countries SET eu_member = true WHERE code IN ('IE', 'DE', 'FR');
