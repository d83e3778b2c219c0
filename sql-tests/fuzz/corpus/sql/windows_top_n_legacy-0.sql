CREATE SOURCE bid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_hop_sum/input.csv', format = 'csv', header = 'true');
CREATE SOURCE bid_late (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_late_event_dropped/input.csv', format = 'csv', header = 'true');
CREATE SOURCE sbid (bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'conformance/window_session_partitioned/input.csv', format = 'csv', header = 'true');
SELECT * FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY price DESC) AS rownum
  FROM (SELECT window_start, window_end, supplier_id, SUM(price) AS price, COUNT(*) AS cnt
        FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(bidtime), INTERVAL '10' MINUTES))
        GROUP BY window_start, window_end, supplier_id)
) WHERE rownum <= 3
