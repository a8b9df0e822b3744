-- Drops the plans catalogue.
DROP TABLE plans;
