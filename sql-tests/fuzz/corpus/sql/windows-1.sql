CREATE SOURCE tum (ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
WITH (connector = 'file', path = 'windows/tumble.csv', format = 'csv', header = 'true');
CREATE SOURCE hop (ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)
WITH (connector = 'file', path = 'windows/hop.csv', format = 'csv', header = 'true');
CREATE SOURCE hop_partly (ts TIMESTAMP(3), v BIGINT, WATERMARK FOR ts AS ts)
WITH (connector = 'file', path = 'windows/hop_partly_late.csv', format = 'csv', header = 'true');
CREATE SOURCE cum (ts TIMESTAMP(3), k VARCHAR, v BIGINT, WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
WITH (connector = 'file', path = 'windows/cumulate.csv', format = 'csv', header = 'true')
