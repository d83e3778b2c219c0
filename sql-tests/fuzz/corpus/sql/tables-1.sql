CREATE TABLE clicks (
  user_id BIGINT,
  page VARCHAR,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
);
SELECT user_id * 10, upper(page), ts FROM clicks LIMIT 3
