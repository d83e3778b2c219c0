"""psycopg 3 against a real eddy server: what a Python user of psycopg notices."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from decimal import Decimal

import psycopg
import psycopg.errors
import pytest
from psycopg.pq import TransactionStatus

from conftest import TABLE_COLUMNS, not_supported_yet

TS1 = dt.datetime(2024, 1, 2, 3, 4, 5, 123000)
TS2 = dt.datetime(2024, 1, 2, 3, 4, 6)
TS3 = dt.datetime(2024, 1, 2, 3, 4, 7, 500000)


def connect(server, **kwargs) -> psycopg.Connection:
    return psycopg.connect(server.dsn, **kwargs)


@contextlib.contextmanager
def cancel_after(conn: psycopg.Connection, seconds: float):
    """Cancel whatever `conn` runs if it is still running after `seconds` (no test hangs)."""
    timer = threading.Timer(seconds, conn.cancel_safe)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def create_table(server, table: str) -> None:
    with connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} ({TABLE_COLUMNS})")


def read_rows(server, sql: str, params=None, timeout: float = 20.0) -> list[tuple]:
    """Run a (LIMITed) continuous query on a fresh autocommit connection."""
    with connect(server, autocommit=True) as conn, cancel_after(conn, timeout):
        return conn.execute(sql, params).fetchall()


# --- connection and transactions -------------------------------------------------------


def test_connect_reports_server_parameters(server):
    with connect(server) as conn:
        assert conn.info.status == psycopg.pq.ConnStatus.OK
        assert conn.info.server_version >= 90000
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.info.encoding == "utf-8"
        assert conn.info.backend_pid != 0
        # Non-ASCII text survives the round trip.
        assert conn.execute("SELECT 'héllo ✓'").fetchone() == ("héllo ✓",)


def test_default_mode_sends_begin_and_tracks_transaction_status(server):
    with connect(server) as conn:
        assert conn.autocommit is False
        assert conn.info.transaction_status == TransactionStatus.IDLE
        cur = conn.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        # psycopg sent BEGIN first: the server must report "in transaction".
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE

        conn.execute("SELECT 2")
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE

        with conn.transaction():
            assert conn.execute("SELECT 3").fetchone() == (3,)
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_autocommit_mode_stays_idle(server):
    with connect(server, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.transaction_status == TransactionStatus.IDLE
        with conn.transaction():
            assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_error_inside_transaction_then_rollback(server):
    with connect(server) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table_psycopg_tx")
        # Postgres reports a failed transaction ('E') until the client rolls back.
        assert conn.info.transaction_status == TransactionStatus.INERROR
        conn.rollback()
        assert conn.info.transaction_status == TransactionStatus.IDLE
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
        conn.commit()


# --- parameters ------------------------------------------------------------------------

MODES = [
    pytest.param(False, False, id="text"),
    pytest.param(True, False, id="binary"),
    pytest.param(False, True, id="text-prepared"),
    pytest.param(True, True, id="binary-prepared"),
]


@pytest.mark.parametrize("binary,prepare", MODES)
def test_scalar_parameters(server, binary, prepare):
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor()
        # psycopg sends the small int 41 as an int2 parameter.
        cur.execute("SELECT %s::int8 + 1", (41,), binary=binary, prepare=prepare)
        assert cur.fetchone() == (42,)
        # The same statement again with another value (re-uses the prepared statement).
        cur.execute("SELECT %s::int8 + 1", (2**40,), binary=binary, prepare=prepare)
        assert cur.fetchone() == (2**40 + 1,)
        cur.execute("SELECT %s::text || 'x'", ("a",), binary=binary, prepare=prepare)
        assert cur.fetchone() == ("ax",)
        cur.execute("SELECT %s::float8 * 2", (1.25,), binary=binary, prepare=prepare)
        assert cur.fetchone() == (2.5,)
        cur.execute("SELECT NOT %s::boolean", (False,), binary=binary, prepare=prepare)
        assert cur.fetchone() == (True,)
        cur.execute("SELECT %s::int8 IS NULL", (None,), binary=binary, prepare=prepare)
        assert cur.fetchone() == (True,)
        cur.execute(
            "SELECT %s::int4 + %s::int4, %s::text",
            (1, 2, "three"),
            binary=binary,
            prepare=prepare,
        )
        assert cur.fetchone() == (3, "three")


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_typed_python_parameters_round_trip(server, binary):
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute("SELECT %s::timestamp", (TS1,))
        assert cur.fetchone() == (TS1,)
        cur.execute("SELECT %s::date", (dt.date(2024, 2, 29),))
        assert cur.fetchone() == (dt.date(2024, 2, 29),)
        cur.execute("SELECT %s::numeric(10,2) * 2", (Decimal("1.25"),))
        assert cur.fetchone()[0] == Decimal("2.50")
        cur.execute("SELECT %s::bytea", (b"\x00\x01ab",))
        assert cur.fetchone() == (b"\x00\x01ab",)


def test_statement_auto_prepared_after_repeats(server):
    """psycopg prepares a statement server-side after it ran `prepare_threshold` times."""
    with connect(server, autocommit=True) as conn:
        conn.prepare_threshold = 2
        for i in range(8):
            assert conn.execute("SELECT %s::int8 * 10", (i,)).fetchone() == (i * 10,)


# --- result types ----------------------------------------------------------------------

RESULT_SQL = """SELECT
    CAST(1 AS SMALLINT) AS i2,
    CAST(2 AS INT) AS i4,
    CAST(3 AS BIGINT) AS i8,
    CAST(1.5 AS DOUBLE PRECISION) AS f8,
    CAST('x' AS TEXT) AS t,
    true AS b,
    TIMESTAMP '2024-01-02 03:04:05.123' AS ts,
    CAST(1.25 AS NUMERIC(10, 2)) AS n,
    CAST('ab' AS BYTEA) AS by,
    DATE '2024-01-02' AS d,
    CAST(NULL AS BIGINT) AS nul"""

EXPECTED_OIDS = {
    "i2": 21,
    "i4": 23,
    "i8": 20,
    "f8": 701,
    "t": (25, 1043),  # text or varchar
    "b": 16,
    "ts": 1114,
    "n": 1700,
    "by": 17,
    "d": 1082,
    "nul": 20,
}


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_result_types(server, binary):
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute(RESULT_SQL)
        row = cur.fetchone()
        names = [c.name for c in cur.description]
        assert names == list(EXPECTED_OIDS)
        for col in cur.description:
            want = EXPECTED_OIDS[col.name]
            assert col.type_code in (want if isinstance(want, tuple) else (want,)), col
        i2, i4, i8, f8, t, b, ts, n, by, d, nul = row
        assert (type(i2), i2) == (int, 1)
        assert (type(i4), i4) == (int, 2)
        assert (type(i8), i8) == (int, 3)
        assert (type(f8), f8) == (float, 1.5)
        assert (type(t), t) == (str, "x")
        assert b is True
        assert (type(ts), ts) == (dt.datetime, TS1)
        assert (type(n), n) == (Decimal, Decimal("1.25"))
        assert (type(by), by) == (bytes, b"ab")
        assert (type(d), d) == (dt.date, dt.date(2024, 1, 2))
        assert nul is None


def test_nanosecond_timestamp_in_text_format(server):
    with connect(server, autocommit=True) as conn:
        # What `SELECT now()` hits (its nanoseconds are rarely all zero), made deterministic.
        (value,) = conn.execute(
            "SELECT CAST('2024-01-01 00:00:00.123456789' AS TIMESTAMP)"
        ).fetchone()
        assert value == dt.datetime(2024, 1, 1, 0, 0, 0, 123456)


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_timestamptz_is_timezone_aware(server, binary):
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor(binary=binary)
        cur.execute("SELECT CAST('2024-01-01T00:00:00+02:00' AS TIMESTAMPTZ) AS tz")
        assert cur.description[0].type_code == 1184
        (value,) = cur.fetchone()
        assert value == dt.datetime(2023, 12, 31, 22, 0, tzinfo=dt.timezone.utc)


def test_column_names_same_in_simple_and_extended_protocol(server):
    queries = [
        "SELECT count(*) FROM range(3)",
        "SELECT upper('a')",
        "SELECT 1 + 1",
        "SELECT CAST(1 AS BIGINT)",
    ]
    with connect(server, autocommit=True) as conn:
        for sql in queries:
            simple = [c.name for c in conn.execute(sql).description]  # no params: simple query
            extended = [c.name for c in conn.cursor(binary=True).execute(sql).description]
            assert extended == simple, sql
        assert [c.name for c in conn.cursor(binary=True).execute("SELECT count(*) FROM range(3)").description] == ["count"]


# --- tables: INSERT, continuous queries, COPY ------------------------------------------


def test_insert_with_parameters_and_read_back(server, name):
    table = name("psy_ins")
    create_table(server, table)
    with connect(server) as conn:
        cur = conn.cursor()
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s, %s)", (1, TS1, "one"))
        assert cur.rowcount == 1
        cur.execute(
            f"INSERT INTO {table} VALUES (%s, %s, %s), (%s, %s, %s)",
            (2, TS2, "two", 3, TS3, None),
        )
        assert cur.rowcount == 2
        conn.commit()
    rows = read_rows(server, f"SELECT a, ts, s FROM {table} LIMIT 3")
    assert sorted(rows) == [(1, TS1, "one"), (2, TS2, "two"), (3, TS3, None)]
    # A filter with a parameter compared against a column.
    rows = read_rows(server, f"SELECT a, s FROM {table} WHERE a > %s LIMIT 2", (1,))
    assert sorted(rows) == [(2, "two"), (3, None)]


def test_executemany_insert(server, name):
    """executemany() uses libpq's pipeline mode: many Bind/Execute before one Sync."""
    table = name("psy_many")
    create_table(server, table)
    data = [(i, TS1 + dt.timedelta(seconds=i), f"row{i}") for i in range(20)]
    with connect(server, autocommit=True) as conn:
        conn.cursor().executemany(f"INSERT INTO {table} (a, ts, s) VALUES (%s, %s, %s)", data)
    rows = read_rows(server, f"SELECT a, ts, s FROM {table} LIMIT 20")
    assert sorted(rows) == data


def test_copy_from_stdin_rows(server, name):
    table = name("psy_copyin")
    create_table(server, table)
    data = [(1, TS1, "tab\tand\nnewline"), (2, TS2, None), (3, TS3, "plain")]
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY {table} FROM STDIN") as copy:
            for row in data:
                copy.write_row(row)
        assert cur.rowcount == 3
    rows = read_rows(server, f"SELECT a, ts, s FROM {table} LIMIT 3")
    assert sorted(rows) == data


def test_copy_from_stdin_csv_with_header(server, name):
    table = name("psy_copycsv")
    create_table(server, table)
    csv = "a,ts,s\n10,2024-01-02 03:04:05.123,x\n11,2024-01-02 03:04:06,\"y, with comma\"\n"
    with connect(server, autocommit=True) as conn:
        cur = conn.cursor()
        with cur.copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
            # Written in two uneven chunks: a CopyData message may end mid-row.
            copy.write(csv[:25])
            copy.write(csv[25:])
        assert cur.rowcount == 2
    rows = read_rows(server, f"SELECT a, ts, s FROM {table} LIMIT 2")
    assert sorted(rows) == [(10, TS1, "x"), (11, TS2, "y, with comma")]




def test_copy_to_stdout_sends_one_row_per_copydata_message(server, name):
    table = name("psy_copymsg")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1, %s, 'one'), (2, %s, 'two')", (TS1, TS2))
    with connect(server, autocommit=True) as conn, cancel_after(conn, 20):
        with conn.cursor().copy(f"COPY (SELECT a FROM {table} LIMIT 2) TO STDOUT") as copy:
            messages = [bytes(m) for m in copy]
    assert sorted(messages) == [b"1\n", b"2\n"]


def test_copy_to_stdout_rows(server, name):
    table = name("psy_copyout")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {table} VALUES (1, %s, 'one'), (2, %s, NULL), (3, %s, 'three')",
            (TS1, TS2, TS3),
        )
    with connect(server, autocommit=True) as conn, cancel_after(conn, 20):
        cur = conn.cursor()
        with cur.copy(f"COPY (SELECT a, s FROM {table} LIMIT 3) TO STDOUT") as copy:
            copy.set_types(["int8", "text"])
            rows = list(copy.rows())
        assert sorted(rows, key=lambda r: r[0]) == [(1, "one"), (2, None), (3, "three")]
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_copy_to_stdout_binary(server, name):
    table = name("psy_copybin")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1, %s, 'one'), (2, %s, NULL)", (TS1, TS2))
    with connect(server, autocommit=True) as conn, cancel_after(conn, 20):
        with conn.cursor().copy(
            f"COPY (SELECT a, ts, s FROM {table} LIMIT 2) TO STDOUT (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "timestamp", "text"])
            rows = list(copy.rows())
    assert sorted(rows, key=lambda r: r[0]) == [(1, TS1, "one"), (2, TS2, None)]


def test_copy_from_stdin_binary(server, name):
    table = name("psy_copyinbin")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "timestamp", "text"])
            copy.write_row((1, TS1, "one"))
    assert read_rows(server, f"SELECT a, ts, s FROM {table} LIMIT 1") == [(1, TS1, "one")]


def table_row_count(server, table: str) -> int:
    with connect(server, autocommit=True) as conn:
        for row in conn.execute("SHOW TABLES").fetchall():
            if row[0] == table:
                return int(row[-1])
    raise AssertionError(f"{table} not in SHOW TABLES")


def test_copy_from_stdin_is_atomic(server, name):
    """A malformed row fails the whole COPY with 22P02 (nothing inserted); so does a client
    abort (CopyFail); the connection stays usable."""
    table = name("psy_copyatomic")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as info:
            with conn.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv)") as copy:
                copy.write("1,2024-01-01 00:00:00,ok\nnot_a_number,2024-01-01 00:00:00,bad\n")
        assert info.value.sqlstate == "22P02"
        assert "line 2" in str(info.value)
        assert conn.execute("SELECT 1").fetchone() == (1,)

        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
                copy.write_row((3, TS1, "x"))
                raise Abort()  # psycopg sends CopyFail
        assert conn.execute("SELECT 2").fetchone() == (2,)
    assert table_row_count(server, table) == 0


def test_pipeline_with_an_error(server):
    with connect(server, autocommit=True) as conn:
        with conn.pipeline():
            curs = [conn.execute("SELECT %s::int8 * 2", (i,)) for i in range(5)]
        assert [c.fetchone() for c in curs] == [(i * 2,) for i in range(5)]
        with pytest.raises(psycopg.errors.UndefinedTable):
            with conn.pipeline():
                conn.execute("SELECT 1")
                conn.execute("SELECT * FROM no_such_table_pipeline")
                conn.execute("SELECT 3")
        assert conn.execute("SELECT 4").fetchone() == (4,)


def test_concurrent_followers_each_get_every_row(server, name):
    table = name("psy_fanout")
    create_table(server, table)
    results: dict[int, list] = {}

    def follow(i: int):
        with connect(server, autocommit=True) as conn, cancel_after(conn, 30):
            results[i] = conn.execute(f"SELECT a FROM {table} LIMIT 5").fetchall()

    threads = [threading.Thread(target=follow, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    with connect(server, autocommit=True) as conn:
        for i in range(5):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s, 'x')", (i, TS1))
    for t in threads:
        t.join(35)
    assert {i: sorted(r) for i, r in results.items()} == {
        i: [(j,) for j in range(5)] for i in range(4)
    }


def test_copy_to_stdout_csv_header(server, name):
    table = name("psy_copyoutcsv")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (7, %s, 'a,b'), (8, %s, 'c')", (TS1, TS2))
    with connect(server, autocommit=True) as conn, cancel_after(conn, 20):
        cur = conn.cursor()
        out = b""
        with cur.copy(
            f"COPY (SELECT a, ts, s FROM {table} LIMIT 2) TO STDOUT WITH (FORMAT csv, HEADER)"
        ) as copy:
            for chunk in copy:
                out += bytes(chunk)
    lines = out.decode().splitlines()
    assert lines[0] == "a,ts,s"
    assert sorted(lines[1:]) == ['7,2024-01-02 03:04:05.123,"a,b"', "8,2024-01-02 03:04:06,c"]


def test_copy_to_stdout_streams_rows_as_they_arrive_and_cancels(server, name):
    """An unbounded COPY (SELECT ...) TO STDOUT delivers each row as soon as it is inserted;
    `conn.cancel()` ends it with QueryCanceled and the connection stays usable."""
    table = name("psy_stream")
    create_table(server, table)
    got: list[bytes] = []
    errors: list[BaseException] = []
    arrived = threading.Condition()

    reader = connect(server, autocommit=True)

    def follow():
        try:
            with reader.cursor().copy(f"COPY (SELECT a FROM {table}) TO STDOUT") as copy:
                for chunk in copy:
                    with arrived:
                        got.append(bytes(chunk))
                        arrived.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=follow, daemon=True)
    try:
        thread.start()
        with connect(server, autocommit=True) as writer:
            for i in range(1, 4):
                writer.execute(f"INSERT INTO {table} VALUES (%s, %s, 'x')", (i, TS1))
                deadline = time.monotonic() + 10
                with arrived:
                    while len(b"".join(got).splitlines()) < i and time.monotonic() < deadline:
                        arrived.wait(0.2)
                lines = b"".join(got).decode().splitlines()
                assert lines == [str(j) for j in range(1, i + 1)], (
                    f"row {i} did not arrive within 10 s while the COPY was running"
                )
        assert thread.is_alive(), "the unbounded COPY ended by itself"
        reader.cancel_safe(timeout=10)
        thread.join(15)
        assert not thread.is_alive(), "COPY still running 15 s after a cancel request"
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
        assert errors[0].sqlstate == "57014"
        assert reader.execute("SELECT 5").fetchone() == (5,)
    finally:
        if thread.is_alive():
            reader.cancel_safe(timeout=5)
            thread.join(5)
        reader.close()


# --- server-side cursors ---------------------------------------------------------------


def test_declare_and_fetch_statements(server, name):
    """DECLARE/FETCH/CLOSE sent as plain statements (with a bound parameter)."""
    table = name("psy_declare")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.cursor().executemany(
            f"INSERT INTO {table} VALUES (%s, %s, %s)", [(i, TS1, "x") for i in range(1, 6)]
        )
    with connect(server) as conn, cancel_after(conn, 30):
        cur = conn.execute(f"DECLARE c CURSOR FOR SELECT a FROM {table} WHERE a >= %s LIMIT 3", (2,))
        assert cur.statusmessage == "DECLARE CURSOR"
        cur = conn.execute("FETCH 2 FROM c")
        assert cur.statusmessage == "FETCH 2"
        assert [c.name for c in cur.description] == ["a"]
        got = cur.fetchall()
        cur = conn.execute("FETCH FORWARD 2 FROM c")
        assert cur.statusmessage == "FETCH 1"
        got += cur.fetchall()
        assert sorted(got) == [(2,), (3,), (4,)]
        assert conn.execute("FETCH 2 FROM c").fetchall() == []
        conn.execute("CLOSE c")
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE




def test_server_side_cursor_fetches_in_chunks(server, name):
    table = name("psy_cursor")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.cursor().executemany(
            f"INSERT INTO {table} VALUES (%s, %s, %s)",
            [(i, TS1, f"s{i}") for i in range(1, 8)],
        )
    with connect(server) as conn, cancel_after(conn, 30):
        with conn.cursor(name="psy_cur") as cur:
            cur.execute(f"SELECT a, s FROM {table} WHERE a <= %s LIMIT 5", (5,))
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            assert [c.name for c in cur.description] == ["a", "s"]
            first = cur.fetchmany(2)
            second = cur.fetchmany(2)
            third = cur.fetchmany(2)
            assert (len(first), len(second), len(third)) == (2, 2, 1)
            assert cur.fetchmany(2) == []
            assert sorted(first + second + third) == [(i, f"s{i}") for i in range(1, 6)]
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_server_side_cursor_iterates_with_itersize(server):
    with connect(server) as conn, cancel_after(conn, 30):
        with conn.cursor(name="psy_iter") as cur:
            cur.itersize = 2
            cur.execute("SELECT %s::int8 * 2 AS v", (21,))
            assert [r for r in cur] == [(42,)]
        conn.rollback()


def insert_later(server, sql: str, params=None, delay: float = 0.5) -> threading.Thread:
    """Runs an INSERT from another connection after `delay` seconds, while the caller waits."""

    def run():
        time.sleep(delay)
        with connect(server, autocommit=True) as writer:
            writer.execute(sql, params)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_server_side_cursor_follows_an_unbounded_query(server, name):
    """A named cursor over a continuous query with no end: each fetchmany returns the rows
    inserted meanwhile by another connection, and waits for them when none are there yet."""
    table = name("psy_follow")
    create_table(server, table)
    with connect(server, autocommit=True) as writer:
        writer.execute(f"INSERT INTO {table} VALUES (1, %s, 'one')", (TS1,))
    with connect(server) as conn, cancel_after(conn, 60):
        with conn.cursor(name="psy_follow_cur") as cur:
            cur.execute(f"SELECT a, s, a * 10 AS a10 FROM {table} WHERE a > %s", (0,))
            assert conn.info.transaction_status == TransactionStatus.INTRANS
            assert [c.name for c in cur.description] == ["a", "s", "a10"]
            assert cur.fetchmany(1) == [(1, "one", 10)]

            # Nothing to fetch yet: the FETCH waits until another client inserts.
            started = time.monotonic()
            inserter = insert_later(
                server, f"INSERT INTO {table} VALUES (2, %s, 'two'), (3, %s, 'three')", (TS2, TS3)
            )
            assert cur.fetchmany(2) == [(2, "two", 20), (3, "three", 30)]
            assert time.monotonic() - started >= 0.4, "FETCH returned before the rows existed"
            inserter.join(10)

            # A row that fails the WHERE never shows up; the next one that passes does.
            inserter = insert_later(
                server, f"INSERT INTO {table} VALUES (-1, %s, 'no'), (4, %s, 'four')", (TS3, TS3)
            )
            assert cur.fetchmany(1) == [(4, "four", 40)]
            inserter.join(10)
        # Leaving the block closed the cursor: the query stops and the transaction goes on.
        assert conn.info.transaction_status == TransactionStatus.INTRANS
        assert conn.execute("SELECT 1").fetchone() == (1,)
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE


def test_server_side_cursor_over_an_updating_aggregate(server, name):
    """An aggregate without a window is a changelog: a named cursor sees the leading `op`
    column, a group's first row as `+`, and an update as `-` (old row) then `+` (new row)."""
    table = name("psy_changelog")
    create_table(server, table)
    with connect(server, autocommit=True) as writer:
        writer.execute(f"INSERT INTO {table} VALUES (1, %s, 'x')", (TS1,))
    with connect(server) as conn, cancel_after(conn, 60):
        with conn.cursor(name="psy_changelog_cur") as cur:
            cur.execute(f"SELECT s, count(*) AS n, sum(a) AS total FROM {table} GROUP BY s")
            assert [c.name for c in cur.description] == ["op", "s", "n", "total"]
            assert cur.fetchmany(1) == [("+", "x", 1, 1)]

            inserter = insert_later(server, f"INSERT INTO {table} VALUES (5, %s, 'x')", (TS2,))
            assert cur.fetchmany(2) == [("-", "x", 1, 1), ("+", "x", 2, 6)]
            inserter.join(10)

            # A new group is a `+` alone.
            inserter = insert_later(server, f"INSERT INTO {table} VALUES (7, %s, 'y')", (TS3,))
            assert cur.fetchmany(1) == [("+", "y", 1, 7)]
            inserter.join(10)
        conn.commit()
        assert conn.info.transaction_status == TransactionStatus.IDLE


# --- materialized views and restarts -------------------------------------------------


def poll(read, done, timeout: float = 30.0, what: str = "the condition"):
    """Calls `read()` until `done(value)` holds, at most `timeout` seconds; returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout} s; last value: {value!r}")
        time.sleep(0.1)


def test_views_come_back_after_a_restart(own_server):
    """Views over a push table are saved in the data directory: after SIGTERM and a new server
    on the same directory they are listed again, their jobs run again, and once the jobs have
    caught up they hold what they held before the restart."""
    server = own_server
    windows_sql = "SELECT window_start, n, total FROM clicks_per_10s ORDER BY window_start"
    pages_sql = "SELECT page, views FROM page_views ORDER BY page"
    with connect(server, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE clicks (user_id BIGINT, page VARCHAR, ts TIMESTAMP(3), "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
        )
        # Five clicks at 00:00:00, 00:00:04, ..., 00:00:16: windows [0, 10) and [10, 20).
        conn.cursor().executemany(
            "INSERT INTO clicks VALUES (%s, %s, %s)",
            [
                (i, ["home", "cart", "home"][i % 3], dt.datetime(2024, 1, 1, 0, 0, 4 * i))
                for i in range(5)
            ],
        )
        # Moves the watermark to 00:00:29, which closes both windows.
        conn.execute("INSERT INTO clicks VALUES (9, 'home', '2024-01-01 00:00:30')")
        conn.execute(
            "CREATE MATERIALIZED VIEW clicks_per_10s AS SELECT window_start, window_end, "
            "count(*) AS n, sum(user_id) AS total "
            "FROM TUMBLE(clicks, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end"
        )
        conn.execute(
            "CREATE MATERIALIZED VIEW page_views AS SELECT page, count(*) AS views "
            "FROM clicks GROUP BY page"
        )
        windows = [
            (dt.datetime(2024, 1, 1, 0, 0, 0), 3, 0 + 1 + 2),
            (dt.datetime(2024, 1, 1, 0, 0, 10), 2, 3 + 4),
        ]
        pages = [("cart", 2), ("home", 4)]
        poll(lambda: conn.execute(windows_sql).fetchall(), lambda r: r == windows, what="windows")
        poll(lambda: conn.execute(pages_sql).fetchall(), lambda r: r == pages, what="page views")

    assert server.terminate(), "the server did not exit on SIGTERM"
    server.start()

    with connect(server, autocommit=True) as conn:
        views = {r[0]: r[1] for r in conn.execute("SHOW VIEWS").fetchall()}
        assert views == {"clicks_per_10s": "append", "page_views": "updating"}
        jobs = dict(conn.execute("SELECT name, status FROM eddy_jobs").fetchall())
        assert jobs == {"clicks_per_10s": "running", "page_views": "running"}
        # The jobs recompute from the table (no checkpoints yet): poll until they caught up.
        poll(lambda: conn.execute(windows_sql).fetchall(), lambda r: r == windows, what="windows")
        poll(lambda: conn.execute(pages_sql).fetchall(), lambda r: r == pages, what="page views")

        # The restarted jobs keep following the table.
        conn.execute("INSERT INTO clicks VALUES (5, 'cart', '2024-01-01 00:00:45')")
        poll(
            lambda: conn.execute(windows_sql).fetchall(),
            lambda r: r == windows + [(dt.datetime(2024, 1, 1, 0, 0, 30), 1, 9)],
            what="the window closed after the restart",
        )
        poll(
            lambda: conn.execute(pages_sql).fetchall(),
            lambda r: r == [("cart", 3), ("home", 4)],
            what="page views after the restart",
        )


def test_interval_join_of_a_view_with_a_table(server, name):
    """A query joining a view with a table follows the view: the view's rows so far and the
    table's rows inserted while it runs are matched in event time."""
    orders, payments, big = name("psy_orders"), name("psy_payments"), name("psy_big")
    with connect(server, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {orders} (id BIGINT, ts TIMESTAMP(3), "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
        )
        conn.execute(
            f"CREATE TABLE {payments} (order_id BIGINT, amount BIGINT, ts TIMESTAMP(3), "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
        )
        conn.execute(
            f"INSERT INTO {orders} VALUES (1, '2024-01-01 00:00:00'), "
            "(2, '2024-01-01 00:00:01'), (3, '2024-01-01 00:00:02')"
        )
        conn.execute(f"CREATE MATERIALIZED VIEW {big} AS SELECT id, ts FROM {orders} WHERE id > 1")
        poll(
            lambda: conn.execute(f"SELECT count(*) FROM {big}").fetchone(),
            lambda r: r == (2,),
            what="the view's two rows",
        )
    inserter = insert_later(
        server,
        f"INSERT INTO {payments} VALUES (1, 5, '2024-01-01 00:00:03'), "
        "(2, 10, '2024-01-01 00:00:03'), (3, 30, '2024-01-01 00:00:05')",
    )
    rows = read_rows(
        server,
        f"SELECT o.id, p.amount FROM {big} o JOIN {payments} p ON o.id = p.order_id "
        "AND p.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND LIMIT 2",
    )
    inserter.join(10)
    # Order 1 is not in the view, so its payment matches nothing.
    assert sorted(rows) == [(2, 10), (3, 30)]


def test_copy_following_a_view_ends_when_the_view_is_dropped(server, name):
    """COPY (SELECT ... FROM v) TO STDOUT follows the view; DROP MATERIALIZED VIEW from another
    connection ends it with an error naming the view, instead of leaving it waiting."""
    table, view = name("psy_dropsrc"), name("psy_dropview")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1, %s, 'x')", (TS1,))
        conn.execute(f"CREATE MATERIALIZED VIEW {view} AS SELECT a, s FROM {table}")
    got: list[bytes] = []
    errors: list[BaseException] = []
    first = threading.Event()
    reader = connect(server, autocommit=True)

    def follow():
        try:
            with reader.cursor().copy(f"COPY (SELECT a, s FROM {view}) TO STDOUT") as copy:
                for chunk in copy:
                    got.append(bytes(chunk))
                    first.set()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    thread = threading.Thread(target=follow, daemon=True)
    try:
        thread.start()
        assert first.wait(10), "the view's row did not arrive within 10 s"
        with connect(server, autocommit=True) as conn:
            conn.execute(f"DROP MATERIALIZED VIEW {view}")
        thread.join(10)
        assert not thread.is_alive(), "the COPY still waits 10 s after its view was dropped"
        assert got == [b"1\tx\n"]
        assert len(errors) == 1 and f'materialized view "{view}" was dropped' in str(errors[0])
        assert reader.execute("SELECT 5").fetchone() == (5,)
    finally:
        if thread.is_alive():
            reader.cancel_safe(timeout=5)
            thread.join(5)
        reader.close()


# --- errors ----------------------------------------------------------------------------

ERRORS = [
    pytest.param("SELEC 1", psycopg.errors.SyntaxError, "42601", id="syntax"),
    pytest.param(
        "SELECT * FROM no_such_table_psycopg",
        psycopg.errors.UndefinedTable,
        "42P01",
        id="undefined-table",
    ),
    pytest.param("SELECT 1 / 0", psycopg.errors.DivisionByZero, "22012", id="division-by-zero"),
]


@pytest.mark.parametrize("autocommit", [True, False], ids=["autocommit", "transaction"])
@pytest.mark.parametrize("sql,exc,sqlstate", ERRORS)
def test_errors_have_sqlstate_and_connection_survives(server, sql, exc, sqlstate, autocommit):
    with connect(server, autocommit=autocommit) as conn:
        with pytest.raises(exc) as info:
            conn.execute(sql)
        assert info.value.sqlstate == sqlstate
        assert info.value.diag.message_primary
        if not autocommit:
            conn.rollback()
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)


def test_table_errors(server, name):
    table = name("psy_err")
    create_table(server, table)
    with connect(server, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn) as info:
            conn.execute(f"SELECT no_such_column FROM {table} LIMIT 1")
        assert info.value.sqlstate == "42703"
        assert "no_such_column" in info.value.diag.message_primary
        with pytest.raises(psycopg.errors.FeatureNotSupported) as info:
            conn.execute(f"SELECT median(n) FROM (SELECT a, count(*) AS n FROM {table} GROUP BY a) s")
        assert info.value.sqlstate == "0A000"
        with pytest.raises(psycopg.errors.DuplicateTable):
            conn.execute(f"CREATE TABLE {table} (a BIGINT)")
        # The same errors through the extended protocol with parameters.
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute(f"SELECT a FROM {table} WHERE nope = %s LIMIT 1", (1,))
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_syntax_error_reports_position(server):
    with connect(server, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.SyntaxError) as info:
            conn.execute("SELECT 1 FROM")
        assert info.value.diag.statement_position is not None
        assert 1 <= int(info.value.diag.statement_position) <= len("SELECT 1 FROM") + 1
        with pytest.raises(psycopg.errors.UndefinedTable) as info:
            conn.execute("SELECT * FROM nowhere_psycopg")
        assert info.value.diag.statement_position == str(len("SELECT * FROM ") + 1)
