-- Removes countries.eu_member.
ALTER TABLE countries DROP COLUMN eu_member;
