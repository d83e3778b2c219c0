CREATE SOURCE letters (id INT, ts TIMESTAMP(3), c VARCHAR,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/letters.csv', format = 'csv', header = 'true');
CREATE SOURCE nav (id INT, ts TIMESTAMP(3), x INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/nav.csv', format = 'csv', header = 'true');
CREATE SOURCE ticks (sym VARCHAR, ts TIMESTAMP(3), seq INT, price INT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'match_recognize/ticks.csv', format = 'csv', header = 'true');
SELECT * FROM ticks MATCH_RECOGNIZE (
  PARTITION BY sym
  ORDER BY ts, seq
  MEASURES A.price AS start_price, LAST(B.price) AS bottom, C.price AS end_price
  ONE ROW PER MATCH
  PATTERN (A B+ C)
  DEFINE B AS B.price < PREV(B.price), C AS C.price > PREV(C.price)
) AS m
