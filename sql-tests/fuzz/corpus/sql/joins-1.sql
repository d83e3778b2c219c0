CREATE SOURCE bl (id VARCHAR, k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/bounds_left.csv', format = 'csv', header = 'true');
CREATE SOURCE br (id VARCHAR, k BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/bounds_right.csv', format = 'csv', header = 'true');
CREATE SOURCE a (id VARCHAR, k1 VARCHAR, k2 BIGINT, ts TIMESTAMP(3), v BIGINT,
                 WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
WITH (connector = 'file', path = 'joins/a.csv', format = 'csv', header = 'true', null_value = 'NULL');
SELECT bl.id FROM bl, br
WHERE bl.k = br.k AND br.ts >= bl.ts - INTERVAL '3' SECOND
  AND INTERVAL '2' SECOND + br.ts >= bl.ts AND br.ts <= bl.ts + INTERVAL '2' SECOND
