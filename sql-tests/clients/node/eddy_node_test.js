// node-postgres and pg-cursor against a real Eddy server; run by test_node.py, which passes the
// server's address and a fresh table name. Exits non-zero (with the failed assertion on stderr)
// if anything a node user relies on does not work.
'use strict';

const assert = require('node:assert/strict');
const { Client } = require('pg');
const Cursor = require('pg-cursor');

const [host, port, table] = process.argv.slice(2);

function read(cursor, n) {
  return new Promise((resolve, reject) =>
    cursor.read(n, (err, rows) => (err ? reject(err) : resolve(rows))));
}

function close(cursor) {
  return new Promise((resolve, reject) => cursor.close((err) => (err ? reject(err) : resolve())));
}

async function main() {
  const client = new Client({ host, port: Number(port), user: 'eddy', database: 'eddy' });
  await client.connect();
  try {
    // Simple protocol.
    let res = await client.query('SELECT 40 + 2 AS answer');
    // DataFusion types integer literals as bigint, which node-postgres returns as a string.
    assert.deepEqual(res.rows, [{ answer: '42' }]);

    await client.query(
      `CREATE TABLE ${table} (a BIGINT, ts TIMESTAMP(3), s VARCHAR, ` +
        "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)");
    // Extended protocol with parameters (node-postgres sends them as text, untyped).
    for (let i = 1; i <= 5; i++) {
      await client.query(`INSERT INTO ${table} VALUES ($1, $2, $3)`,
        [i, `2024-01-02 03:04:0${i}`, `row ${i}`]);
    }
    res = await client.query('SELECT $1::bigint * 2 AS doubled, $2::text AS label', [21, 'x']);
    assert.deepEqual(res.rows, [{ doubled: '42', label: 'x' }]);

    // The catalogs: the table is a table, with its columns' Postgres types.
    res = await client.query(
      'SELECT c.relkind, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type ' +
        'FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid ' +
        'WHERE c.relname = $1 ORDER BY a.attnum', [table]);
    assert.deepEqual(res.rows, [
      { relkind: 'r', attname: 'a', type: 'bigint' },
      { relkind: 'r', attname: 'ts', type: 'timestamp(3) without time zone' },
      { relkind: 'r', attname: 's', type: 'text' },
    ]);

    // pg-cursor over a continuous query (a push table never ends): a few rows at a time,
    // then close, which stops the query.
    const cursor = client.query(new Cursor(`SELECT a, s FROM ${table}`));
    const first = await read(cursor, 2);
    assert.deepEqual(first.map((r) => Number(r.a)), [1, 2]);
    const next = await read(cursor, 2);
    assert.deepEqual(next.map((r) => r.s), ['row 3', 'row 4']);
    await close(cursor);

    // The connection is still usable after closing the cursor.
    res = await client.query('SELECT count(*) AS n FROM pg_catalog.pg_namespace');
    assert.equal(Number(res.rows[0].n), 3);
    await client.query(`DROP TABLE ${table}`);
  } finally {
    await client.end();
  }
  console.log('node-postgres: all checks passed');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
