CREATE SOURCE person (id BIGINT, name VARCHAR, date_time TIMESTAMP(3),
                      WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/persons.csv', format = 'csv', header = 'true');
CREATE SOURCE auction (id BIGINT, seller BIGINT, date_time TIMESTAMP(3),
                       WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/auctions.csv', format = 'csv', header = 'true');
CREATE SOURCE wl (ts TIMESTAMP(3), num INT, id VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/win_left.csv', format = 'csv', header = 'true', null_value = 'NULL');
SELECT seller, window_start FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
GROUP BY seller, window_start, window_end
