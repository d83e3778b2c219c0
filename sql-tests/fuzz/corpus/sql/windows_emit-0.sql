CREATE SOURCE ebids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'updating/bids', format = 'csv', header = 'true');
SELECT auction, window_start, window_end, count(*), sum(price)
FROM SESSION(ebids, ts, INTERVAL '2' SECOND, auction) WHERE auction = 1
GROUP BY auction, window_start, window_end EMIT ON UPDATE
