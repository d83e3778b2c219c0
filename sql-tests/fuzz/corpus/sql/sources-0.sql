CREATE SOURCE bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'file', path = 'bids.csv', format = 'csv', header = 'true', null_value = 'NULL');
CREATE TABLE flink_bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, date_time TIMESTAMP(3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = 'bids.csv', 'format' = 'csv',
        'csv.ignore-first-line' = 'true', 'csv.null-literal' = 'NULL');
CREATE SOURCE bad_bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3)
) WITH (connector = 'file', path = 'bids_bad.csv', header = 'true');
SELECT auction, bidder, price, channel FROM bids
