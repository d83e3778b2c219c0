CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'updating/bids', format = 'csv', header = 'true');
CREATE SOURCE nexmark_bids (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '20000');
CREATE VIEW q12 AS
SELECT B.bidder, count(*) as bid_count,
  TUMBLE_START(B.p_time, INTERVAL '10' SECOND) as starttime,
  TUMBLE_END(B.p_time, INTERVAL '10' SECOND) as endtime
FROM (SELECT *, PROCTIME() as p_time FROM nexmark_bids) B
GROUP BY B.bidder, TUMBLE(B.p_time, INTERVAL '10' SECOND);
SET parallelism = 1
