CREATE SOURCE letters (id INT, ts TIMESTAMP(3), c VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/letters.csv', format = 'csv', header = 'true');
CREATE SOURCE nav (id INT, ts TIMESTAMP(3), x INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/nav.csv', format = 'csv', header = 'true');
CREATE SOURCE ticks (sym VARCHAR, ts TIMESTAMP(3), seq INT, price INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/ticks.csv', format = 'csv', header = 'true');
EXPLAIN SELECT * FROM nav MATCH_RECOGNIZE (ORDER BY ts
  MEASURES P.id AS id, P.x AS x
  PATTERN (P) DEFINE P AS P.x > PREV(P.x) AND P.x > NEXT(P.x)) AS m
