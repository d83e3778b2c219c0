CREATE SOURCE mr_t1 (
  id INT, "value" INT, rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/mr_all_rows_classifier_prev/input.csv',
        format = 'csv', header = 'true');
CREATE SOURCE mr_t2 (
  id INT, "value" INT, rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/mr_alternation_preference/input.csv',
        format = 'csv', header = 'true');
CREATE SOURCE mr_ticker1 (
  symbol VARCHAR, tstamp BIGINT, price INT, tax INT, rowtime TIMESTAMP(3),
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH (connector = 'file',
        path = 'conformance/mr_min_quantifier_greedy_no_backtrack/input.csv',
        format = 'csv', header = 'true');
SELECT m.id, m.match_no, m.val, m.label
FROM mr_t1
  MATCH_RECOGNIZE (
    ORDER BY rowtime
    MEASURES
      MATCH_NUMBER() AS match_no,
      RUNNING LAST("value") AS val,
      CLASSIFIER() AS label
    ALL ROWS PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B+ C+)
    DEFINE
      B AS B."value" < PREV(B."value"),
      C AS C."value" > PREV(C."value")
  ) AS m
