CREATE SOURCE events (k BIGINT, v BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'over/events', format = 'csv', header = 'true');
CREATE SOURCE events_nw (k BIGINT, v BIGINT, ts TIMESTAMP(3))
WITH (connector = 'file', path = 'over/events', format = 'csv', header = 'true');
EXPLAIN SELECT k, v, LEAD(v) OVER (PARTITION BY k ORDER BY ts) AS next FROM events
