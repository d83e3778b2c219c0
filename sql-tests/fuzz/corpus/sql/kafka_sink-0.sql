CREATE TABLE clicks (k VARCHAR, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts);
CREATE SINK ks AS SELECT k, v, ts FROM clicks WITH (connector = 'kafka', topic = 'clicks',
  properties.bootstrap.servers = '127.0.0.1:9', format = 'json', key.format = 'raw', key.fields = 'k',
  sink.partitioner = 'round-robin', properties.linger.ms = '20')
