CREATE SOURCE person (id BIGINT, name VARCHAR, date_time TIMESTAMP(3),
                      WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/persons.csv', format = 'csv', header = 'true');
CREATE SOURCE auction (id BIGINT, seller BIGINT, date_time TIMESTAMP(3),
                       WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/auctions.csv', format = 'csv', header = 'true');
CREATE SOURCE wl (ts TIMESTAMP(3), num INT, id VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/win_left.csv', format = 'csv', header = 'true', null_value = 'NULL');
SELECT a.id, b_us.id FROM a JOIN b_us
ON a.k1 = b_us.k1 AND a.k2 = b_us.k2
   AND a.ts BETWEEN b_us.ts - INTERVAL '2' SECOND AND b_us.ts + INTERVAL '2' SECOND
