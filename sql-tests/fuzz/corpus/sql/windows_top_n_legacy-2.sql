CREATE SOURCE bid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_hop_sum/input.csv', format = 'csv', header = 'true');
CREATE SOURCE bid_late (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_late_event_dropped/input.csv', format = 'csv', header = 'true');
CREATE SOURCE sbid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_session_partitioned/input.csv', format = 'csv', header = 'true');
SELECT TUMBLE_START(a.bidtime, INTERVAL '10' MINUTE), count(*) FROM bid a JOIN bid b ON a.item = b.item
GROUP BY TUMBLE(a.bidtime, INTERVAL '10' MINUTE)
