CREATE SOURCE mr_agg (
  symbol VARCHAR, ts TIMESTAMP(3), price BIGINT,
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'match_recognize/aggregates.csv', format = 'csv',
        header = 'true');
SELECT * FROM mr_agg MATCH_RECOGNIZE (
  PARTITION BY symbol ORDER BY ts
  MEASURES AVG(A.price) AS a_avg, B.price AS b, COUNT(*) AS match_rows,
           COUNT(A.*) AS a_rows, SUM(A.price) AS a_sum, MATCH_NUMBER() AS n
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (A+ B)
  DEFINE A AS SUM(A.price) < 100, B AS B.price < AVG(A.price)
)
