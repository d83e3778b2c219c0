CREATE TABLE clicks (
  user_id BIGINT,
  page VARCHAR,
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
);
INSERT INTO clicks VALUES
  (1, 'home', '2023-05-06 16:51:00'),
  (2, 'cart', '2023-05-06T16:51:01.5'),
  (3, NULL, '2023-05-06 16:51:02')
