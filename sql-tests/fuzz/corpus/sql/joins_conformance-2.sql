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
SELECT L.num AS L_Num, L.id AS L_Id, R.num AS R_Num, R.id AS R_Id,
       COALESCE(L.window_start, R.window_start) AS window_start,
       COALESCE(L.window_end, R.window_end) AS window_end
FROM (SELECT * FROM TABLE(TUMBLE(TABLE LeftTable, DESCRIPTOR(row_time), INTERVAL '5' MINUTES))) L
INNER JOIN (SELECT * FROM TABLE(TUMBLE(TABLE RightTable, DESCRIPTOR(row_time), INTERVAL '5' MINUTES))) R
ON L.num = R.num AND L.window_start = R.window_start AND L.window_end = R.window_end
