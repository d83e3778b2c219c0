CREATE SOURCE T1 (
  "key"   VARCHAR,
  id      VARCHAR,
  rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0.001' SECOND
) WITH (connector = 'file', path = 'conformance/interval_join_inner/input_T1.csv',
        format = 'csv', header = 'true', null_value = 'NULL');
CREATE SOURCE T2 (
  "key"   VARCHAR,
  id      VARCHAR,
  rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '0.001' SECOND
) WITH (connector = 'file', path = 'conformance/interval_join_inner/input_T2.csv',
        format = 'csv', header = 'true', null_value = 'NULL');
CREATE SOURCE LeftTable (
  row_time TIMESTAMP(3),
  num      INT,
  id       VARCHAR,
  WATERMARK FOR row_time AS row_time - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/window_join_inner/input_LeftTable.csv',
        format = 'csv', header = 'true', null_value = 'NULL');
SELECT t2."key", t2.id AS id2, t1.id AS id1
FROM T1 AS t1 JOIN T2 AS t2 ON
  t1."key" = t2."key" AND
  t1.rowtime BETWEEN t2.rowtime - INTERVAL '5' SECOND AND t2.rowtime + INTERVAL '6' SECOND
