CREATE SOURCE bl (id VARCHAR, k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/bounds_left.csv', format = 'csv', header = 'true');
CREATE SOURCE br (id VARCHAR, k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/bounds_right.csv', format = 'csv', header = 'true');
CREATE SOURCE a (id VARCHAR, k1 VARCHAR, k2 BIGINT, ts TIMESTAMP(3), v BIGINT,
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH (connector = 'file', path = 'joins/a.csv', format = 'csv', header = 'true', null_value = 'NULL');
SELECT window_start, window_end, count(*), string_agg(id, ',' ORDER BY id)
FROM TUMBLE(
  (SELECT a.ts AS ts, a.id || '-' || coalesce(b.id, 'NULL') AS id
   FROM a LEFT JOIN b
   ON a.k1 = b.k1 AND a.k2 = b.k2 AND a.ts BETWEEN b.ts - INTERVAL '2' SECOND AND b.ts + INTERVAL '2' SECOND),
  ts, INTERVAL '2' SECOND)
GROUP BY window_start, window_end
