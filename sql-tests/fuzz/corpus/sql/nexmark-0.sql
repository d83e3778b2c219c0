CREATE SOURCE bids (WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)
WITH (connector = 'nexmark', nexmark.table = 'bid', events.max = '100');
CREATE SOURCE people (id BIGINT, name VARCHAR, date_time TIMESTAMP(3))
WITH (connector = 'nexmark', nexmark.table = 'person', events.max = '200');
SELECT auction, bidder, price, channel FROM bids LIMIT 3
