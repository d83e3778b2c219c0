CREATE SOURCE k (k VARCHAR, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
WITH (connector = 'kafka', topic = 't', properties.bootstrap.servers = '127.0.0.1:9', format = 'json',
      scan.startup.mode = 'specific-offsets', scan.startup.specific-offsets = 'partition:0,offset:42;partition:1,offset:300',
      scan.bounded.mode = 'latest-offset', properties.group.id = 'g', properties.client.id = 'eddy-test');
CREATE SOURCE k_csv (k VARCHAR, v BIGINT) WITH (connector = 'kafka', topic = 't',
  properties.bootstrap.servers = '127.0.0.1:9', format = 'csv', csv.field-delimiter = ';');
CREATE SOURCE k_raw (line BYTEA) WITH (connector = 'kafka', topic = 't',
  properties.bootstrap.servers = '127.0.0.1:9', format = 'raw', scan.startup.mode = 'latest-offset');
CREATE SOURCE bad (v BIGINT) WITH (connector = 'kafka', properties.bootstrap.servers = '127.0.0.1:9', format = 'json')
