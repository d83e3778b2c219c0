CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'updating/bids', format = 'csv', header = 'true');
CREATE VIEW pricey (a, p, ts) AS SELECT auction, price * 2, ts FROM bids WHERE price >= 20;
CREATE VIEW per_auction AS SELECT a, count(*) AS n, sum(p) AS total FROM pricey GROUP BY a;
SELECT * FROM pricey
