CREATE SOURCE persons (id BIGINT, name VARCHAR, state VARCHAR)
WITH (connector = 'file', path = 'regular/persons.csv', format = 'csv', header = 'true');
CREATE SOURCE auctions (id BIGINT, seller BIGINT, category BIGINT, reserve BIGINT)
WITH (connector = 'file', path = 'regular/auctions.csv', format = 'csv', header = 'true');
CREATE MATERIALIZED VIEW sellers AS
SELECT a.id, p.name FROM auctions a LEFT JOIN persons p ON a.seller = p.id;
SELECT p.name, p.state, a.id FROM auctions a JOIN persons p ON a.seller = p.id
WHERE a.category = 10 AND p.state IN ('OR', 'ID', 'CA')
