CREATE TABLE flink_style (`key` STRING, rowtime TIMESTAMP(3), WATERMARK FOR rowtime AS rowtime - INTERVAL '2' SECONDS);
SHOW DateStyle
