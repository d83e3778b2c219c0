CREATE SOURCE bid_hop (
  bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/window_hop_sum/input.csv', format = 'csv',
        header = 'true', null_value = 'NULL');
CREATE SOURCE bid_late (
  bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR, supplier_id VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/window_late_event_dropped/input.csv',
        format = 'csv', header = 'true', null_value = 'NULL');
CREATE SOURCE bid_session (
  bidtime TIMESTAMP(3), price DECIMAL(10, 2), item VARCHAR,
  WATERMARK FOR bidtime AS bidtime - INTERVAL '1' SECOND
) WITH (connector = 'file', path = 'conformance/window_session_partitioned/input.csv',
        format = 'csv', header = 'true', null_value = 'NULL');
CREATE SOURCE t_eowc (
  tm TIMESTAMP(3), foo INT,
  WATERMARK FOR tm AS tm - INTERVAL '5' MINUTE
) WITH (connector = 'file', path = 'conformance/window_tumble_eowc_no_flush/input.csv',
        format = 'csv', header = 'true', null_value = 'NULL')
