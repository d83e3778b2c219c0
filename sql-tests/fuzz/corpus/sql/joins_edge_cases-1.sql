CREATE SOURCE person (id BIGINT, name VARCHAR, date_time TIMESTAMP(3),
                      WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/persons.csv', format = 'csv', header = 'true');
CREATE SOURCE auction (id BIGINT, seller BIGINT, date_time TIMESTAMP(3),
                       WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
WITH (connector = 'file', path = 'joins/auctions.csv', format = 'csv', header = 'true');
CREATE SOURCE wl (ts TIMESTAMP(3), num INT, id VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '3' SECOND)
WITH (connector = 'file', path = 'joins/win_left.csv', format = 'csv', header = 'true', null_value = 'NULL');
SELECT P.id, P.name, P.starttime
FROM (SELECT id, name, window_start AS starttime, window_end AS endtime
      FROM TUMBLE(person, date_time, INTERVAL '10' SECOND)
      GROUP BY id, name, window_start, window_end) P
JOIN (SELECT seller, window_start AS starttime, window_end AS endtime
      FROM TUMBLE(auction, date_time, INTERVAL '10' SECOND)
      GROUP BY seller, window_start, window_end) A
ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime
