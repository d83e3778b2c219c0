"""The real psql binary against a real eddy server, driven through subprocesses."""

from __future__ import annotations

import os
import pty
import queue
import shutil
import signal
import socket
import struct
import subprocess
import termios
import threading
import time

import psycopg
import pytest

from conftest import TABLE_COLUMNS, psql_env

PSQL = shutil.which("psql") or "/usr/bin/psql"

pytestmark = pytest.mark.skipif(
    not os.path.exists(PSQL), reason="psql is not installed (apt-get install postgresql-client)"
)


def psql_args(server, *extra: str) -> list[str]:
    return [
        PSQL,
        "-X",
        "-v",
        "ON_ERROR_STOP=0",
        # No pager: with FETCH_COUNT and a terminal psql would pipe rows through one.
        "-P",
        "pager=off",
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        "eddy",
        *extra,
        "eddy",
    ]


def psql(server, *extra: str, stdin: str | None = None, timeout: float = 30):
    return subprocess.run(
        psql_args(server, *extra),
        input=stdin,
        capture_output=True,
        text=True,
        env=psql_env(),
        timeout=timeout,
    )


def execute(server, sql: str, params=None) -> None:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql, params)


def create_table(server, table: str, values: str | None = None) -> None:
    execute(server, f"CREATE TABLE {table} ({TABLE_COLUMNS})")
    if values:
        execute(server, f"INSERT INTO {table} VALUES {values}")


def healthy(server) -> bool:
    out = psql(server, "-A", "-t", "-c", "SELECT 40 + 2", timeout=15)
    return out.returncode == 0 and out.stdout.strip() == "42"


class TerminalPsql:
    """psql with its stdout on a pseudo-terminal, as a user at a terminal runs it.

    (With a pipe, psql's stdio buffers COPY output in 4 KiB blocks, so a test could not see
    rows arrive one by one.) A thread reads the terminal so a test can wait for a line with a
    timeout; stderr is a pipe.
    """

    def __init__(self, server, *extra: str):
        master, slave = pty.openpty()
        # No echo, no \r\n translation: the lines read are exactly what psql wrote.
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.ONLCR
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.proc = subprocess.Popen(
            psql_args(server, *extra),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=subprocess.PIPE,
            text=True,
            env=psql_env(),
        )
        os.close(slave)
        self.master = master
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO once psql has exited and closed the terminal
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self.lines.put(line.decode(errors="replace"))
        if buf:
            self.lines.put(buf.decode(errors="replace"))
        self.lines.put(None)

    def next_line(self, timeout: float) -> str | None:
        """The next line, or None at EOF; raises queue.Empty after `timeout` seconds."""
        return self.lines.get(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.thread.join(5)
        try:
            os.close(self.master)
        except OSError:
            pass


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


# --- plain queries ---------------------------------------------------------------------


def test_select_1(server):
    out = psql(server, "-c", "SELECT 1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].strip() == "?column?"
    assert lines[2].strip() == "1"
    assert lines[3] == "(1 row)"
    assert out.stderr == ""

    out = psql(server, "-A", "-t", "-c", "SELECT 1 AS x, 'a' AS y")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "1|a\n"


def test_syntax_error_prints_line_and_caret(server):
    sql = "SELECT 1 FROM"
    out = psql(server, "-c", sql)
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0].startswith("ERROR:  "), out.stderr
    assert lines[1] == f"LINE 1: {sql}"
    caret = lines[2]
    assert caret.strip() == "^"
    # The caret points inside the statement (at its end here: FROM needs a table).
    assert len("LINE 1: ") <= caret.index("^") <= len(lines[1])


def test_unknown_table_caret_points_at_the_name(server):
    out = psql(server, "-c", "SELECT * FROM nowhere_psql")
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert lines[0] == 'ERROR:  relation "nowhere_psql" does not exist', out.stderr
    assert lines[1] == "LINE 1: SELECT * FROM nowhere_psql"
    assert lines[2].index("^") == len("LINE 1: SELECT * FROM ")


def test_script_continues_after_errors(server):
    script = "SELECT 1 AS a;\nSELEC 2;\nSELECT * FROM no_such_psql;\nSELECT 3 AS c;\n"
    out = psql(server, "-A", "-t", "-f", "-", stdin=script)
    assert out.stdout.split() == ["1", "3"]
    assert out.stderr.count("ERROR:") == 2


def test_fetch_count_uses_a_cursor(server, name):
    table = name("psql_fetch")
    create_table(
        server,
        table,
        ", ".join(f"({i}, TIMESTAMP '2024-01-01 00:00:0{i}', 's{i}')" for i in range(1, 8)),
    )
    # With FETCH_COUNT psql sends BEGIN; DECLARE _psql_cursor ...; FETCH FORWARD 2 ... ; CLOSE.
    script = f"\\set FETCH_COUNT 2\nSELECT a, s FROM {table} LIMIT 5;\nSELECT 42 AS after;\n"
    out = psql(server, "-A", "-t", "-f", "-", stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert len(lines) == 6, out.stdout
    assert sorted(lines[:5]) == [f"{i}|s{i}" for i in range(1, 6)]
    assert lines[5] == "42"


def test_fetch_count_with_aligned_output(server, name):
    table = name("psql_fetch2")
    create_table(server, table, "(1, TIMESTAMP '2024-01-01 00:00:00', 'x')")
    script = f"\\set FETCH_COUNT 10\nSELECT a, s FROM {table} LIMIT 1;\n"
    out = psql(server, "-f", "-", stdin=script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["a", "s"]
    assert [c.strip() for c in lines[2].split("|")] == ["1", "x"]
    assert lines[3] == "(1 row)"


def test_copy_to_stdout_csv_header(server, name):
    table = name("psql_copy")
    create_table(
        server,
        table,
        "(1, TIMESTAMP '2024-01-01 00:00:00', 'x'), (2, TIMESTAMP '2024-01-01 00:00:01', 'y,z')",
    )
    out = psql(
        server,
        "-c",
        f"COPY (SELECT a, ts, s FROM {table} LIMIT 2) TO STDOUT WITH (FORMAT csv, HEADER)",
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "a,ts,s"
    assert sorted(lines[1:]) == ["1,2024-01-01 00:00:00,x", '2,2024-01-01 00:00:01,"y,z"']


def test_copy_from_stdin_in_a_script(server, name):
    table = name("psql_copyin")
    create_table(server, table)
    script = (
        f"COPY {table} FROM STDIN WITH (FORMAT csv);\n"
        "1,2024-01-01 00:00:00,x\n"
        "2,2024-01-01 00:00:01,y\n"
        "\\.\n"
        f"SELECT a, s FROM {table} LIMIT 2;\n"
    )
    out = psql(server, "-A", "-t", "-f", "-", stdin=script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "COPY 2"
    assert sorted(lines[1:]) == ["1|x", "2|y"]

    # psql's \copy streams a local file's contents through COPY ... FROM STDIN.
    out = psql(
        server,
        "-c",
        f"\\copy {table} FROM STDIN WITH (FORMAT csv)",
        stdin="3,2024-01-01 00:00:02,z\n",
    )
    assert out.returncode == 0, out.stderr
    out = psql(server, "-A", "-t", "-c", f"SELECT a FROM {table} WHERE a = 3 LIMIT 1")
    assert out.stdout == "3\n", out.stderr


# --- materialized views ----------------------------------------------------------------


def wait_for_job(server, view: str, rows_out: int, timeout: float = 30) -> None:
    """Polls eddy_jobs until the view's job has emitted `rows_out` rows (bounded)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT status, rows_out FROM eddy_jobs WHERE name = %s", (view,)
            ).fetchone()
            if row == ("running", rows_out):
                return
            if time.monotonic() > deadline:
                pytest.fail(f"the job of {view} did not reach {rows_out} rows in {timeout} s: {row}")
            time.sleep(0.1)


def test_fetch_count_over_a_materialized_view(server, name):
    """With FETCH_COUNT psql reads a view's current contents through a cursor, 10 rows per
    FETCH, and the statement ends: a SELECT over a view is a snapshot, not a stream."""
    table, view = name("psql_vsrc"), name("psql_view")
    # One row per second from 00:00:00 to 00:00:24, then one at 00:01:00 whose watermark
    # (00:00:59) closes all 25 one-second windows.
    create_table(
        server,
        table,
        ", ".join(f"({i}, TIMESTAMP '2024-01-01 00:00:{i:02}', 's')" for i in range(25))
        + ", (99, TIMESTAMP '2024-01-01 00:01:00', 'late')",
    )
    execute(
        server,
        f"CREATE MATERIALIZED VIEW {view} AS SELECT window_start, count(*) AS n, sum(a) AS total "
        f"FROM TUMBLE({table}, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end",
    )
    wait_for_job(server, view, 25)

    script = (
        "\\set FETCH_COUNT 10\n"
        f"SELECT window_start, n, total FROM {view} ORDER BY window_start;\n"
        "SELECT 42 AS after;\n"
    )
    out = psql(server, "-A", "-t", "-f", "-", stdin=script)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert out.stdout.splitlines() == [
        f"2024-01-01 00:00:{i:02}|1|{i}" for i in range(25)
    ] + ["42"]

    # Aligned output: one header, every row, the row count.
    out = psql(server, "-f", "-", stdin=script)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [c.strip() for c in lines[0].split("|")] == ["window_start", "n", "total"]
    body = [[c.strip() for c in line.split("|")] for line in lines[2:27]]
    assert body == [[f"2024-01-01 00:00:{i:02}", "1", str(i)] for i in range(25)]
    assert lines[27] == "(25 rows)"


def test_fetch_count_follows_a_view_and_a_table(server, name):
    """A query reading a view and a table is continuous: psql (FETCH_COUNT 10) first gets the
    view's current rows and the table's rows, then the rows both gain as another client
    inserts into the table, 10 per FETCH, as they arrive."""
    table, view = name("psql_ftab"), name("psql_fview")
    create_table(
        server,
        table,
        ", ".join(f"({i}, TIMESTAMP '2024-01-01 00:00:0{i}', 's{i}')" for i in range(1, 6)),
    )
    execute(server, f"CREATE MATERIALIZED VIEW {view} AS SELECT a, s FROM {table} WHERE a > 0")
    wait_for_job(server, view, 5)

    query = (
        f"SELECT 'view' AS src, a, s FROM {view} "
        f"UNION ALL SELECT 'table' AS src, a, s FROM {table} LIMIT 20"
    )
    # Aligned output: unaligned mode writes a row's newline only before the next row.
    term = TerminalPsql(server, "-t", "-v", "FETCH_COUNT=10", "-c", query)

    def fetch_rows(n: int, what: str) -> list[str]:
        rows = []
        while len(rows) < n:
            try:
                line = term.next_line(timeout=15)
            except queue.Empty:
                pytest.fail(f"{what}: only {rows} arrived within 15 s")
            assert line is not None, f"psql ended after {rows}: {term.proc.stderr.read()}"
            if line.strip():  # psql separates the batches of a FETCH_COUNT query
                rows.append("|".join(c.strip() for c in line.split("|")))
        return rows

    try:
        first = fetch_rows(10, "the view's snapshot and the table's rows")
        assert sorted(first) == sorted(
            [f"{src}|{i}|s{i}" for src in ("view", "table") for i in range(1, 6)]
        )
        assert term.proc.poll() is None, "psql ended although the query follows the table"

        with psycopg.connect(server.dsn, autocommit=True) as writer:
            for i in range(6, 11):
                writer.execute(
                    f"INSERT INTO {table} VALUES (%s, TIMESTAMP '2024-01-01 00:00:10', %s)",
                    (i, f"s{i}"),
                )
        second = fetch_rows(10, "the rows inserted meanwhile")
        # Each new row reaches the query twice: through the table, and through the view's job.
        assert sorted(second) == sorted(
            [f"{src}|{i}|s{i}" for src in ("view", "table") for i in range(6, 11)]
        )
        # LIMIT 20 reached: the statement ends and psql exits.
        term.proc.wait(timeout=15)
        assert term.proc.returncode == 0, term.proc.stderr.read()
    finally:
        term.stop()


# --- streaming, cancel, disconnect -----------------------------------------------------


def test_unbounded_copy_streams_rows_and_ctrl_c_cancels(server, name):
    table = name("psql_stream")
    create_table(server, table)
    term = TerminalPsql(server, "-c", f"COPY (SELECT a FROM {table}) TO STDOUT")
    proc = term.proc
    try:
        time.sleep(0.5)  # let psql connect and the query start
        with psycopg.connect(server.dsn, autocommit=True) as writer:
            for i in range(1, 4):
                writer.execute(
                    f"INSERT INTO {table} VALUES (%s, TIMESTAMP '2024-01-01 00:00:00', 'x')", (i,)
                )
                try:
                    line = term.next_line(timeout=10)
                except queue.Empty:
                    pytest.fail(f"row {i} did not appear on psql's stdout within 10 s")
                assert line == str(i)
                assert proc.poll() is None, "psql exited although the query is unbounded"

        # Ctrl-C: psql sends a CancelRequest on a new connection.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("psql still running 15 s after Ctrl-C (cancel request ignored?)")
        stderr = proc.stderr.read()
        assert proc.returncode != 0
        assert "canceling statement due to user request" in stderr, stderr
        assert healthy(server)
    finally:
        term.stop()


def test_fetch_count_streams_rows_and_ctrl_c_cancels(server, name):
    """An unbounded query under FETCH_COUNT=1: psql DECLAREs a cursor and FETCHes one row at a
    time, printing each as it arrives; Ctrl-C cancels the pending FETCH."""
    table = name("psql_fetchstream")
    create_table(server, table, "(1, TIMESTAMP '2024-01-01 00:00:00', 'x')")
    # Aligned output: unaligned mode writes a row's newline only before the next row.
    term = TerminalPsql(server, "-t", "-v", "FETCH_COUNT=1", "-c", f"SELECT a, s FROM {table}")
    try:
        assert term.next_line(timeout=10).split() == ["1", "|", "x"]
        execute(server, f"INSERT INTO {table} VALUES (2, TIMESTAMP '2024-01-01 00:00:01', 'y')")
        try:
            assert term.next_line(timeout=10).split() == ["2", "|", "y"]
        except queue.Empty:
            pytest.fail("a row inserted while FETCH was waiting did not appear within 10 s")
        # Let psql send its next FETCH first: a cancel that reaches the server between two
        # statements cancels nothing (as in Postgres) and the FETCH would then wait forever.
        time.sleep(1)
        term.proc.send_signal(signal.SIGINT)
        try:
            term.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("psql still running 15 s after Ctrl-C during a FETCH")
        stderr = term.proc.stderr.read()
        assert "canceling statement due to user request" in stderr, stderr
        assert healthy(server)
    finally:
        term.stop()


def test_plain_select_ctrl_c_cancels(server, name):
    """An unbounded plain SELECT (simple protocol; psql prints nothing before it ends)."""
    table = name("psql_selcancel")
    create_table(server, table, "(1, TIMESTAMP '2024-01-01 00:00:00', 'x')")
    term = TerminalPsql(server, "-c", f"SELECT a FROM {table}")
    try:
        time.sleep(1.5)
        assert term.proc.poll() is None
        term.proc.send_signal(signal.SIGINT)
        try:
            term.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("psql still running 15 s after Ctrl-C")
        stderr = term.proc.stderr.read()
        assert "canceling statement due to user request" in stderr, stderr
        assert healthy(server)
    finally:
        term.stop()


def test_killed_client_mid_query_leaves_server_serving(server, name):
    table = name("psql_kill")
    create_table(server, table, "(1, TIMESTAMP '2024-01-01 00:00:00', 'x')")
    terms = [TerminalPsql(server, "-c", f"COPY (SELECT a, s FROM {table}) TO STDOUT") for _ in range(2)]
    procs = [t.proc for t in terms]
    try:
        for t in terms:
            assert t.next_line(timeout=10) == "1\tx"
        # Kill one client abruptly (no Terminate, no cancel): the socket just closes.
        procs[0].kill()
        procs[0].wait(timeout=10)
        # The server keeps producing into the dead socket; it must notice and not crash.
        with psycopg.connect(server.dsn, autocommit=True) as writer:
            for i in range(2, 5):
                writer.execute(
                    f"INSERT INTO {table} VALUES (%s, TIMESTAMP '2024-01-01 00:00:00', 'y')", (i,)
                )
        # The other client still follows the stream.
        assert [terms[1].next_line(timeout=10) for _ in range(3)] == ["2\ty", "3\ty", "4\ty"]
        assert healthy(server)
        procs[1].send_signal(signal.SIGINT)
        procs[1].wait(timeout=15)
        assert healthy(server)
    finally:
        for t in terms:
            t.stop()


def test_dropped_connection_during_extended_query(server, name):
    """A driver whose process dies while a continuous query runs (extended protocol)."""
    table = name("psql_drop")
    create_table(server, table, "(1, TIMESTAMP '2024-01-01 00:00:00', 'x')")
    code = (
        "import psycopg, sys\n"
        f"conn = psycopg.connect({server.dsn!r}, autocommit=True)\n"
        "print('started', flush=True)\n"
        f"conn.execute('SELECT a FROM {table} WHERE a > %s', (0,)).fetchall()\n"
    )
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(1)
        assert proc.poll() is None
        proc.kill()
        proc.wait(timeout=10)
        execute(server, f"INSERT INTO {table} VALUES (2, TIMESTAMP '2024-01-01 00:00:01', 'y')")
        assert healthy(server)
    finally:
        stop(proc)


def _server_socket_closed(sock: socket.socket, timeout: float) -> bool:
    """True once the server closes its end (recv returns EOF) within `timeout` seconds."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def _raw_startup(server) -> socket.socket:
    """A minimal protocol-level client: startup without SSL, wait for ReadyForQuery."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    params = b"user\0eddy\0database\0eddy\0\0"
    body = struct.pack("!I", 196608) + params
    sock.sendall(struct.pack("!I", len(body) + 4) + body)
    buf = b""
    while b"Z\0\0\0\x05" not in buf:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection during startup"
        buf += chunk
    return sock


def _raw_query(sock: socket.socket, sql: str) -> None:
    body = sql.encode() + b"\0"
    sock.sendall(b"Q" + struct.pack("!I", len(body) + 4) + body)


def test_disconnect_while_query_waits_is_noticed(server, name):
    table = name("psql_waitdrop")
    create_table(server, table)
    sock = _raw_startup(server)
    try:
        _raw_query(sock, f"COPY (SELECT a FROM {table}) TO STDOUT")
        time.sleep(1)
        # The client goes away (as a killed process does: its side sends FIN).
        sock.shutdown(socket.SHUT_WR)
        assert _server_socket_closed(sock, timeout=10), (
            "server did not close the connection within 10 s of the client disconnecting"
        )
        assert healthy(server)
    finally:
        sock.close()


# --- meta-commands over the Postgres catalogs ------------------------------------------

BIDS_COLUMNS = (
    "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, "
    "date_time TIMESTAMP(3), extra VARCHAR, "
    "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND"
)

# What Postgres prints for the same columns (VARCHAR columns are text in Eddy: Arrow keeps no
# length, and Eddy sends them as text).
BIDS_TYPES = [
    ("auction", "bigint"),
    ("bidder", "bigint"),
    ("price", "bigint"),
    ("channel", "text"),
    ("url", "text"),
    ("date_time", "timestamp(3) without time zone"),
    ("extra", "text"),
]


def meta(server, command: str):
    """A meta-command's output, asserting that psql printed no error."""
    out = psql(server, "-c", command)
    assert out.returncode == 0, out.stderr
    assert "ERROR" not in out.stderr, out.stderr
    return out.stdout


def table_rows(text: str) -> list[list[str]]:
    """The data rows of psql's aligned output, split into trimmed cells."""
    lines = text.splitlines()
    sep = next(i for i, line in enumerate(lines) if set(line) <= set("-+") and line)
    rows = []
    for line in lines[sep + 1 :]:
        if "|" not in line:
            break
        rows.append([cell.strip() for cell in line.split("|")])
    return rows


@pytest.fixture
def catalog_objects(server, name):
    """A push table shaped like Nexmark's bids and a materialized view over it."""
    bids = name("bids")
    view = name("bids_per_auction")
    execute(server, f"CREATE TABLE {bids} ({BIDS_COLUMNS})")
    execute(
        server,
        f"CREATE MATERIALIZED VIEW {view} AS SELECT auction, count(*) AS n FROM {bids} GROUP BY auction",
    )
    yield bids, view
    execute(server, f"DROP MATERIALIZED VIEW IF EXISTS {view}")
    execute(server, f"DROP TABLE IF EXISTS {bids}")


def test_backslash_d_name_shows_postgres_types(server, catalog_objects):
    bids, _ = catalog_objects
    out = meta(server, f"\\d {bids}")
    lines = out.splitlines()
    assert lines[0].strip() == f'Table "public.{bids}"'
    header = [c.strip() for c in lines[1].split("|")]
    assert header == ["Column", "Type", "Collation", "Nullable", "Default"]
    rows = table_rows(out)
    assert [(r[0], r[1]) for r in rows] == BIDS_TYPES
    assert all(r[2:] == ["", "", ""] for r in rows), rows


def test_backslash_d_plus_shows_storage_and_view_definition(server, catalog_objects):
    bids, view = catalog_objects
    out = meta(server, f"\\d+ {bids}")
    header = [c.strip() for c in out.splitlines()[1].split("|")]
    assert header[:5] == ["Column", "Type", "Collation", "Nullable", "Default"]
    assert "Storage" in header and "Description" in header
    assert [(r[0], r[1]) for r in table_rows(out)] == BIDS_TYPES
    out = meta(server, f"\\d+ {view}")
    assert out.splitlines()[0].strip() == f'Materialized view "public.{view}"'
    assert [(r[0], r[1]) for r in table_rows(out)] == [("auction", "bigint"), ("n", "bigint")]
    assert "View definition:" in out
    assert "count(*)" in out


def test_backslash_d_lists_tables_and_views(server, catalog_objects):
    bids, view = catalog_objects
    kinds = {r[1]: (r[0], r[2], r[3]) for r in table_rows(meta(server, "\\d"))}
    assert kinds[bids] == ("public", "table", "eddy")
    assert kinds[view] == ("public", "materialized view", "eddy")
    assert kinds["eddy_jobs"] == ("public", "view", "eddy")


def test_backslash_dt_dm_dv_filter_by_kind(server, catalog_objects):
    bids, view = catalog_objects
    tables = [r[1] for r in table_rows(meta(server, "\\dt"))]
    assert bids in tables and view not in tables
    views = [r[1] for r in table_rows(meta(server, "\\dm"))]
    assert view in views and bids not in views
    plain_views = [r[1] for r in table_rows(meta(server, "\\dv"))]
    assert plain_views == ["eddy_checkpoints", "eddy_jobs"]


def test_backslash_l_dn_du(server):
    databases = table_rows(meta(server, "\\l"))
    assert [(r[0], r[1], r[2]) for r in databases] == [("eddy", "eddy", "UTF8")]
    assert table_rows(meta(server, "\\dn")) == [["public", "eddy"]]
    roles = table_rows(meta(server, "\\du"))
    assert roles[0][0] == "eddy" and "Superuser" in roles[0][1]


def test_backslash_dt_capital_and_df(server):
    # No user-defined types: an empty list, as in a fresh Postgres database.
    out = meta(server, "\\dT")
    assert "List of data types" in out and "(0 rows)" in out
    functions = table_rows(meta(server, "\\df sum"))
    assert [(r[0], r[1], r[4]) for r in functions] == [("pg_catalog", "sum", "agg")]
    functions = table_rows(meta(server, "\\df date_trunc"))
    assert [(r[1], r[4]) for r in functions] == [("date_trunc", "func")]


def test_tab_completion_of_relation_names(server, catalog_objects):
    bids, _ = catalog_objects
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        psql_args(server),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**psql_env(), "TERM": "dumb"},
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = b""
        deadline = time.monotonic() + 20
        # Wait for the prompt, then type a prefix of the table's name and Tab.
        while b"eddy=#" not in seen and time.monotonic() < deadline:
            seen += _read_pty(master)
        os.write(master, f"SELECT * FROM {bids[:-3]}\t".encode())
        while bids.encode() not in seen and time.monotonic() < deadline:
            seen += _read_pty(master)
        assert bids.encode() in seen, seen.decode(errors="replace")
    finally:
        os.write(master, b"\x03\\q\n")
        stop(proc)
        os.close(master)


def _read_pty(fd: int) -> bytes:
    import select

    ready, _, _ = select.select([fd], [], [], 0.5)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return b""


def test_set_time_zone_changes_timestamptz_text(server):
    out = psql(
        server,
        "-A",
        "-t",
        "-c",
        "SET TimeZone = 'Europe/Paris'",
        "-c",
        "SELECT TIMESTAMPTZ '2024-01-15 12:00:00+00', TIMESTAMPTZ '2024-07-15 12:00:00.25+00'",
        "-c",
        "SET TimeZone = 'UTC'",
        "-c",
        "SELECT TIMESTAMPTZ '2024-01-15 12:00:00+00'",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "SET",
        "2024-01-15",
        "13:00:00+01|2024-07-15",
        "14:00:00.25+02",
        "SET",
        "2024-01-15",
        "12:00:00+00",
    ]
