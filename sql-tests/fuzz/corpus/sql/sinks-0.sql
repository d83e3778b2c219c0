CREATE SOURCE bids (
  auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (connector = 'file', path = 'bids.csv', format = 'csv', header = 'true', null_value = 'NULL');
CREATE SOURCE bids_back (auction BIGINT, price BIGINT, channel VARCHAR, date_time TIMESTAMP(3))
WITH (connector = 'file', path = 'bids.parquet');
CREATE SOURCE bids_csv (auction BIGINT, channel VARCHAR)
WITH (connector = 'file', path = 'bids.csv', header = 'true');
COPY (SELECT auction, price, channel, date_time FROM bids) TO 'bids.parquet' WITH (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 2)
