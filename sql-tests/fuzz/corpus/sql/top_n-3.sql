CREATE SOURCE bids (auction BIGINT, bidder BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'top_n/bids', format = 'csv', header = 'true');
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC) AS rn
  FROM TUMBLE((SELECT auction, count(*) AS n, max(ts) AS t FROM bids GROUP BY auction), t,
              INTERVAL '10' SECOND)
) WHERE rn <= 1
