CREATE SOURCE letters (id INT, ts TIMESTAMP(3), c VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/letters.csv', format = 'csv', header = 'true');
CREATE SOURCE nav (id INT, ts TIMESTAMP(3), x INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/nav.csv', format = 'csv', header = 'true');
CREATE SOURCE ticks (sym VARCHAR, ts TIMESTAMP(3), seq INT, price INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/ticks.csv', format = 'csv', header = 'true');
WITH s AS (SELECT ts, x FROM nav WHERE x > 2)
SELECT * FROM s MATCH_RECOGNIZE (ORDER BY ts MEASURES FIRST(x) AS a, LAST(x) AS b
  PATTERN (A B)) AS m
