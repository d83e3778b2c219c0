CREATE SOURCE ses_after (ts TIMESTAMP(3), k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'windows/session_after_close.csv', format = 'csv', header = 'true');
CREATE SOURCE tum (ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
WITH (connector = 'file', path = 'windows/tumble.csv', format = 'csv', header = 'true');
CREATE SOURCE hop_partly (ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'windows/hop_partly_late.csv', format = 'csv', header = 'true');
SELECT window_start, window_end, k, sum(v), count(*)
FROM SESSION(ses_after, ts, INTERVAL '5' MINUTE, k)
GROUP BY window_start, window_end, k
