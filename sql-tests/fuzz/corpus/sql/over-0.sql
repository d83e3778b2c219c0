CREATE SOURCE events (k BIGINT, v BIGINT, ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'over/events', format = 'csv', header = 'true');
CREATE SOURCE events_nw (k BIGINT, v BIGINT, ts TIMESTAMP(3))
WITH (connector = 'file', path = 'over/events', format = 'csv', header = 'true');
SELECT k, v,
  sum(v) OVER w, count(v) OVER w, max(v) OVER w
FROM events
WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)
