-- Drops page_views and its partitions.
DROP TABLE page_views;
