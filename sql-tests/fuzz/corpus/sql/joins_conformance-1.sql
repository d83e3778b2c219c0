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
CREATE SOURCE RightTable (
  row_time TIMESTAMP(3),
  num      INT,
  id       VARCHAR,
  WATERMARK FOR row_time AS row_time - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/window_join_inner/input_RightTable.csv',
        format = 'csv', header = 'true', null_value = 'NULL')
