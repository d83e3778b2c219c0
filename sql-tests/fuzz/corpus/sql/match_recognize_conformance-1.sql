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
CREATE SOURCE mr_ticker2 (
  symbol VARCHAR, rowtime TIMESTAMP(3), price BIGINT, tax BIGINT,
  WATERMARK FOR rowtime AS rowtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/mr_skip_past_last_row/input.csv',
        format = 'csv', header = 'true')
