CREATE SOURCE orders (order_id BIGINT, kind VARCHAR, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
WITH (connector = 'file', path = 'match_recognize/orders.csv', format = 'csv', header = 'true');
SELECT * FROM orders MATCH_RECOGNIZE (PARTITION BY order_id ORDER BY ts
  MEASURES A.ts AS placed, B.ts AS paid, MATCH_STATUS() AS status
  ONE ROW PER MATCH WITH TIMEOUTS
  PATTERN (A B) WITHIN INTERVAL '15' MINUTE
  DEFINE A AS kind = 'order', B AS kind = 'payment') AS m
