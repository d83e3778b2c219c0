CREATE SOURCE orders (id BIGINT, cur VARCHAR, amount BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'temporal/orders.csv', format = 'csv', header = 'true');
CREATE SOURCE rates (cur VARCHAR, rate BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'temporal/rates.csv', format = 'csv', header = 'true');
CREATE VIEW versioned_rates AS
SELECT cur, rate, ts FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY cur ORDER BY ts DESC) AS rn FROM rates
) WHERE rn = 1;
EXPLAIN SELECT o.id, r.rate
FROM orders o JOIN versioned_rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur
