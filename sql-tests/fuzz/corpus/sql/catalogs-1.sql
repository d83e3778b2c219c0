CREATE TABLE cat_bids (
  auction BIGINT,
  price DECIMAL(10, 2),
  channel VARCHAR,
  date_time TIMESTAMP(3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
);
CREATE MATERIALIZED VIEW cat_per_auction AS SELECT auction, count(*) AS n FROM cat_bids GROUP BY auction;
SELECT c.relname FROM pg_catalog.pg_class c
WHERE c.relname OPERATOR(pg_catalog.~) '^(cat_bids)$' COLLATE pg_catalog.default
  AND pg_catalog.pg_table_is_visible(c.oid)
