CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'updating/bids', format = 'csv', header = 'true');
CREATE MATERIALIZED VIEW one_auction AS SELECT auction, count(*) AS n FROM bids GROUP BY auction LIMIT 1;
SELECT count(*), sum(price), max(price) FROM bids
