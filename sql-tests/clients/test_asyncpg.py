"""asyncpg against a real eddy server.

asyncpg always uses the extended protocol, sends no parameter types (it trusts the server's
ParameterDescription) and uses binary formats for everything it knows. Each test runs its
coroutine with asyncio.run under an overall deadline, so nothing can hang.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from decimal import Decimal

import asyncpg
import asyncpg.exceptions
import pytest

from conftest import TABLE_COLUMNS, not_supported_yet

TS1 = dt.datetime(2024, 1, 2, 3, 4, 5, 123000)
TS2 = dt.datetime(2024, 1, 2, 3, 4, 6)
TS3 = dt.datetime(2024, 1, 2, 3, 4, 7, 500000)

DEADLINE = 45.0


def run(coro, timeout: float = DEADLINE):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def connect(server) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=server.host, port=server.port, user="eddy", database="eddy", timeout=10
    )


async def create_table(server, table: str, rows=()) -> None:
    conn = await connect(server)
    try:
        await conn.execute(f"CREATE TABLE {table} ({TABLE_COLUMNS})")
        if rows:
            await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3)", rows)
    finally:
        await conn.close(timeout=5)


ROWS = [(1, TS1, "one"), (2, TS2, "two"), (3, TS3, None)]


def test_untyped_parameters_are_inferred_from_casts(server):
    async def main():
        conn = await connect(server)
        try:
            rows = await conn.fetch("SELECT $1::int8 + 1", 41)
            assert len(rows) == 1 and rows[0][0] == 42
            assert await conn.fetchval("SELECT $1::text || 'x'", "a") == "ax"
            assert await conn.fetchval("SELECT $1::float8 * 2", 1.25) == 2.5
            assert await conn.fetchval("SELECT NOT $1::boolean", False) is True
            assert await conn.fetchval("SELECT $1::int4 + $2::int4", 1, 2) == 3
            assert await conn.fetchval("SELECT $1::timestamp", TS1) == TS1
            assert await conn.fetchval("SELECT $1::date", dt.date(2024, 2, 29)) == dt.date(
                2024, 2, 29
            )
            assert await conn.fetchval("SELECT $1::numeric(10,2) * 2", Decimal("1.25")) == Decimal(
                "2.50"
            )
            assert await conn.fetchval("SELECT $1::bytea", b"\x00ab") == b"\x00ab"
            assert await conn.fetchval("SELECT $1::int8 IS NULL", None) is True
        finally:
            await conn.close(timeout=5)

    run(main())


def test_prepared_statement_describes_parameters_and_columns(server):
    async def main():
        conn = await connect(server)
        try:
            stmt = await conn.prepare("SELECT $1::int8 + 1 AS n, $2::text AS s")
            assert [t.name for t in stmt.get_parameters()] == ["int8", "text"]
            assert [(a.name, a.type.name) for a in stmt.get_attributes()] == [
                ("n", "int8"),
                ("s", "text"),
            ]
            assert tuple(await stmt.fetchrow(1, "a")) == (2, "a")
            assert tuple(await stmt.fetchrow(10, "b")) == (11, "b")
        finally:
            await conn.close(timeout=5)

    run(main())


def test_result_types(server):
    async def main():
        conn = await connect(server)
        try:
            row = await conn.fetchrow(
                """SELECT CAST(1 AS SMALLINT) AS i2, CAST(2 AS INT) AS i4, CAST(3 AS BIGINT) AS i8,
                          CAST(1.5 AS DOUBLE PRECISION) AS f8, CAST('x' AS TEXT) AS t, true AS b,
                          TIMESTAMP '2024-01-02 03:04:05.123' AS ts,
                          CAST(1.25 AS NUMERIC(10, 2)) AS n, CAST('ab' AS BYTEA) AS by,
                          DATE '2024-01-02' AS d, CAST(NULL AS BIGINT) AS nul"""
            )
            assert list(row.keys()) == ["i2", "i4", "i8", "f8", "t", "b", "ts", "n", "by", "d", "nul"]
            assert (row["i2"], row["i4"], row["i8"]) == (1, 2, 3)
            assert all(type(row[k]) is int for k in ("i2", "i4", "i8"))
            assert (type(row["f8"]), row["f8"]) == (float, 1.5)
            assert row["t"] == "x"
            assert row["b"] is True
            assert (type(row["ts"]), row["ts"]) == (dt.datetime, TS1)
            assert (type(row["n"]), row["n"]) == (Decimal, Decimal("1.25"))
            assert row["by"] == b"ab"
            assert row["d"] == dt.date(2024, 1, 2)
            assert row["nul"] is None
        finally:
            await conn.close(timeout=5)

    run(main())


def test_insert_with_parameters_and_filter_on_column(server, name):
    table = name("apg_ins")

    async def main():
        await create_table(server, table)
        conn = await connect(server)
        try:
            # The server must infer $1..$3 from the table's columns.
            status = await conn.execute(f"INSERT INTO {table} VALUES ($1, $2, $3)", *ROWS[0])
            assert status == "INSERT 0 1"
            await conn.executemany(f"INSERT INTO {table} VALUES ($1, $2, $3)", ROWS[1:])
            rows = await conn.fetch(f"SELECT a, ts, s FROM {table} LIMIT 3")
            assert sorted(tuple(r) for r in rows) == ROWS
            # `a > $1`: the parameter's type comes from the column it is compared with.
            rows = await conn.fetch(f"SELECT a, s FROM {table} WHERE a > $1 LIMIT 2", 1)
            assert sorted(tuple(r) for r in rows) == [(2, "two"), (3, None)]
            rows = await conn.fetch(
                f"SELECT a FROM {table} WHERE ts >= $1 AND s = $2 LIMIT 1", TS2, "two"
            )
            assert [tuple(r) for r in rows] == [(2,)]
        finally:
            await conn.close(timeout=5)

    run(main())


def test_cursor_inside_transaction(server, name):
    table = name("apg_cur")

    async def main():
        await create_table(server, table, [(i, TS1, f"s{i}") for i in range(1, 8)])
        conn = await connect(server)
        try:
            async with conn.transaction():
                assert conn.is_in_transaction()
                got = [
                    tuple(r)
                    async for r in conn.cursor(f"SELECT a, s FROM {table} LIMIT 5", prefetch=2)
                ]
                assert sorted(got) == [(i, f"s{i}") for i in range(1, 6)]

                cur = await conn.cursor(f"SELECT a FROM {table} WHERE a > $1 LIMIT 4", 3)
                first = await cur.fetch(3)
                second = await cur.fetch(3)
                assert (len(first), len(second)) == (3, 1)
                assert sorted(r["a"] for r in first + second) == [4, 5, 6, 7]
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close(timeout=5)

    run(main())


def test_transaction_rollback_and_state(server):
    async def main():
        conn = await connect(server)
        try:
            tr = conn.transaction()
            await tr.start()
            assert conn.is_in_transaction()
            assert await conn.fetchval("SELECT 7") == 7
            await tr.rollback()
            assert not conn.is_in_transaction()
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                async with conn.transaction():
                    await conn.fetch("SELECT * FROM no_such_table_apg_tx")
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT 8") == 8
        finally:
            await conn.close(timeout=5)

    run(main())


def test_portal_streams_rows_as_they_arrive(server, name):
    """A cursor (protocol-level portal, Execute with a row limit) over an unbounded query:
    each fetch returns as soon as enough rows exist, and waits for rows inserted later."""
    table = name("apg_portal")

    async def main():
        await create_table(server, table, ROWS)
        conn = await connect(server)
        writer = await connect(server)
        try:
            async with conn.transaction():
                cur = await conn.cursor(f"SELECT a FROM {table}")
                assert [r["a"] for r in await asyncio.wait_for(cur.fetch(2), 10)] == [1, 2]
                assert [r["a"] for r in await asyncio.wait_for(cur.fetch(1), 10)] == [3]

                async def insert_later():
                    await asyncio.sleep(0.5)
                    await writer.execute(f"INSERT INTO {table} VALUES (4, $1, 'late')", TS3)

                task = asyncio.create_task(insert_later())
                assert [r["a"] for r in await asyncio.wait_for(cur.fetch(1), 10)] == [4]
                await task
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await writer.close(timeout=5)
            await conn.close(timeout=5)

    run(main())


def test_limit_parameter(server, name):
    table = name("apg_limit")

    async def main():
        await create_table(server, table, ROWS)
        conn = await connect(server)
        try:
            rows = await conn.fetch(f"SELECT a FROM {table} LIMIT $1", 2)
            assert len(rows) == 2
        finally:
            await conn.close(timeout=5)

    run(main())


def test_column_names_are_postgres_names(server):
    async def main():
        conn = await connect(server)
        try:
            row = await conn.fetchrow("SELECT count(*), upper('a'), 1 + 1 FROM range(3)")
            assert list(row.keys()) == ["count", "upper", "?column?"]
        finally:
            await conn.close(timeout=5)

    run(main())


def test_copy_records_to_table(server, name):
    table = name("apg_records")

    async def main():
        await create_table(server, table)
        conn = await connect(server)
        try:
            status = await conn.copy_records_to_table(table, records=ROWS, timeout=20)
            assert status == "COPY 3"
            rows = await conn.fetch(f"SELECT a, ts, s FROM {table} LIMIT 3", timeout=20)
            assert sorted(tuple(r) for r in rows) == ROWS
        finally:
            await conn.close(timeout=5)

    run(main())


def test_copy_to_and_from(server, name):
    table = name("apg_copy")

    async def main():
        await create_table(server, table)
        conn = await connect(server)
        try:
            data = b"1,2024-01-02 03:04:05.123,one\n2,2024-01-02 03:04:06,\n"
            status = await conn.copy_to_table(table, source=io.BytesIO(data), format="csv")
            assert status == "COPY 2"
            out = io.BytesIO()
            status = await conn.copy_from_query(
                f"SELECT a, s FROM {table} LIMIT 2", output=out, format="csv", header=True
            )
            assert status == "COPY 2"
            lines = out.getvalue().decode().splitlines()
            assert lines[0] == "a,s"
            assert sorted(lines[1:]) == ["1,one", "2,"]
        finally:
            await conn.close(timeout=5)

    run(main())


def test_query_timeout_cancels_a_continuous_query(server, name):
    """`fetch(..., timeout=)` on an unbounded query: asyncpg sends a CancelRequest and the
    connection stays usable."""
    table = name("apg_timeout")

    async def main():
        await create_table(server, table, ROWS)
        conn = await connect(server)
        try:
            with pytest.raises(asyncio.TimeoutError):
                await conn.fetch(f"SELECT a FROM {table}", timeout=1.5)
            assert await conn.fetchval("SELECT 40 + 2", timeout=10) == 42
        finally:
            await conn.close(timeout=5)

    run(main())


ERRORS = [
    pytest.param("SELEC 1", (), asyncpg.exceptions.PostgresSyntaxError, "42601", id="syntax"),
    pytest.param(
        "SELECT * FROM no_such_table_apg",
        (),
        asyncpg.exceptions.UndefinedTableError,
        "42P01",
        id="undefined-table",
    ),
    pytest.param("SELECT 1 / 0", (), asyncpg.exceptions.DivisionByZeroError, "22012", id="div0"),
    # With parameters: the error comes from Parse/Describe instead of a simple query.
    pytest.param(
        "SELECT * FROM no_such_table_apg WHERE a = $1",
        (1,),
        asyncpg.exceptions.UndefinedTableError,
        "42P01",
        id="undefined-table-param",
    ),
    pytest.param(
        "SELECT $1::int8 / 0", (1,), asyncpg.exceptions.DivisionByZeroError, "22012", id="div0-param"
    ),
]


@pytest.mark.parametrize("sql,params,exc,sqlstate", ERRORS)
def test_errors(server, sql, params, exc, sqlstate):
    async def main():
        conn = await connect(server)
        try:
            with pytest.raises(exc) as info:
                await conn.fetch(sql, *params)
            assert info.value.sqlstate == sqlstate
            assert await conn.fetchval("SELECT 41 + 1") == 42
        finally:
            await conn.close(timeout=5)

    run(main())


def test_table_errors(server, name):
    table = name("apg_err")

    async def main():
        await create_table(server, table)
        conn = await connect(server)
        try:
            with pytest.raises(asyncpg.exceptions.UndefinedColumnError) as info:
                await conn.fetch(f"SELECT nope FROM {table} LIMIT 1")
            assert info.value.sqlstate == "42703"
            with pytest.raises(asyncpg.exceptions.FeatureNotSupportedError):
                await conn.fetch(f"SELECT median(n) FROM (SELECT a, count(*) AS n FROM {table} GROUP BY a) s")
            with pytest.raises(asyncpg.exceptions.DuplicateTableError):
                await conn.execute(f"CREATE TABLE {table} (a BIGINT)")
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close(timeout=5)

    run(main())


# --- materialized views: background jobs -----------------------------------------------


async def poll(read, done, timeout: float = 20.0, what: str = "the condition"):
    """Awaits `read()` until `done(value)` holds, at most `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await read()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"{what} did not hold within {timeout} s; last value: {value!r}")
        await asyncio.sleep(0.1)


def test_view_job_outlives_the_connection_that_created_it(server, name):
    """CREATE MATERIALIZED VIEW starts a job that keeps running after its creator disconnects:
    another connection sees it in SHOW JOBS, reads the view and watches it grow; DROP
    MATERIALIZED VIEW stops the job, which then leaves SHOW JOBS."""
    table = name("apg_jobsrc")
    view = name("apg_jobview")
    query = (
        f"SELECT s, window_start, count(*) AS n FROM TUMBLE({table}, ts, INTERVAL '10' SECOND) "
        "GROUP BY s, window_start, window_end"
    )
    t0 = dt.datetime(2024, 1, 1)
    sec = dt.timedelta(seconds=1)

    async def main():
        await create_table(server, table)
        creator = await connect(server)
        try:
            await creator.executemany(
                f"INSERT INTO {table} VALUES ($1, $2, $3)",
                [(1, t0, "a"), (2, t0 + 3 * sec, "a"), (3, t0 + 5 * sec, "b"), (4, t0 + 12 * sec, "a")],
            )
            assert await creator.execute(f"CREATE MATERIALIZED VIEW {view} AS {query}") == (
                "CREATE MATERIALIZED VIEW"
            )
        finally:
            await creator.close(timeout=5)

        conn = await connect(server)
        try:
            jobs = [r for r in await conn.fetch("SHOW JOBS") if r["name"] == view]
            assert len(jobs) == 1, jobs
            job = jobs[0]
            assert job["status"] == "running"
            assert job["query"] == query
            assert job["error"] is None
            assert job["started_at"].tzinfo is not None

            def read_view():
                return conn.fetch(f"SELECT s, window_start, n FROM {view} ORDER BY s, window_start")

            # The watermark (00:00:11) has closed [00:00:00, 00:00:10) only.
            rows = await poll(read_view, lambda r: len(r) == 2, what="the first window")
            assert [tuple(r) for r in rows] == [("a", t0, 2), ("b", t0, 1)]

            # Its creator is gone, yet the job still reads the table: a later row closes the
            # next window.
            await conn.execute(f"INSERT INTO {table} VALUES (5, $1, 'c')", t0 + 25 * sec)
            rows = await poll(read_view, lambda r: len(r) == 3, what="the second window")
            assert [tuple(r) for r in rows] == [
                ("a", t0, 2),
                ("a", t0 + 10 * sec, 1),
                ("b", t0, 1),
            ]
            row = await poll(
                lambda: conn.fetchrow(
                    "SELECT status, rows_in, rows_out, watermark FROM eddy_jobs WHERE name = $1",
                    view,
                ),
                lambda r: r["rows_out"] == 3,
                what="eddy_jobs catching up",
            )
            assert tuple(row) == ("running", 5, 3, t0 + 24 * sec)

            assert await conn.execute(f"DROP MATERIALIZED VIEW {view}") == "DROP MATERIALIZED VIEW"
            assert view not in [r["name"] for r in await conn.fetch("SHOW JOBS")]
            assert await conn.fetchval("SELECT count(*) FROM eddy_jobs WHERE name = $1", view) == 0
            with pytest.raises(asyncpg.exceptions.UndefinedTableError):
                await conn.fetch(f"SELECT * FROM {view}")
            # The table it read is still there.
            assert await conn.fetchval(f"SELECT a FROM {table} WHERE a = 5 LIMIT 1") == 5
        finally:
            await conn.close(timeout=5)

    run(main())
