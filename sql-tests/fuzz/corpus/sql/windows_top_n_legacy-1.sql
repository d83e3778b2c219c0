CREATE SOURCE bid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_hop_sum/input.csv', format = 'csv', header = 'true');
CREATE SOURCE bid_late (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_late_event_dropped/input.csv', format = 'csv', header = 'true');
CREATE SOURCE sbid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_session_partitioned/input.csv', format = 'csv', header = 'true');
SELECT TUMBLE_START(bidtime, INTERVAL '10' MINUTE) AS ws,
       TUMBLE_END(bidtime, INTERVAL '10' MINUTE) AS we,
       TUMBLE_ROWTIME(bidtime, INTERVAL '10' MINUTE) AS rt,
       SUM(price)
FROM bid
GROUP BY TUMBLE(bidtime, INTERVAL '10' MINUTE)
