CREATE TABLE cat_bids (
  auction BIGINT,
  price DECIMAL(10, 2),
  channel VARCHAR,
  date_time TIMESTAMP(3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
);
CREATE MATERIALIZED VIEW cat_per_auction AS SELECT auction, count(*) AS n FROM cat_bids GROUP BY auction;
SELECT c.relname, c.relkind, n.nspname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname LIKE 'cat_%' ORDER BY 1
