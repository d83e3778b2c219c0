CREATE TABLE st (k BIGINT, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts);
CREATE MATERIALIZED VIEW s_late WITH (allowed.lateness = '3 seconds', late.rows = 'late') AS
SELECT k, window_start, window_end, count(*) AS n
FROM SESSION(st, ts, INTERVAL '5' SECOND, k) GROUP BY k, window_start, window_end;
INSERT INTO st VALUES (1, 1, '2024-01-01 00:00:00'), (1, 1, '2024-01-01 00:00:07'), (1, 1, '2024-01-01 00:00:06')
