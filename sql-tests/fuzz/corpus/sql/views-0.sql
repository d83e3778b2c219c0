CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'updating/bids', format = 'csv', header = 'true');
CREATE MATERIALIZED VIEW w AS
SELECT auction, window_start, window_end, count(*) AS n, sum(price) AS total
FROM TUMBLE(bids, ts, INTERVAL '2' SECOND)
GROUP BY auction, window_start, window_end;
CREATE MATERIALIZED VIEW per_auction AS
SELECT auction, sum(n) AS bids, sum(total) AS total FROM w GROUP BY auction;
SET parallelism = 1
