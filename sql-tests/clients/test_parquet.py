"""Exporting query results to files, read back by other tools: `COPY (query) TO 'file'` and
`CREATE SINK ... WITH (connector = 'parquet')`.

The files are read with pyarrow and DuckDB and compared, row for row, with what the same query
returns over pgwire (psycopg): what a user who exports results for another tool notices.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import psycopg.errors
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

SINK_TIMEOUT = 60.0

# A bounded, deterministic bid stream of 2000 events (0.2 s of event time).
BIDS_OPTIONS = "connector = 'nexmark', nexmark.table = 'bid', events.max = '2000'"
# 200000 events (20 s of event time) from 23:59:35: its 10-second windows end at 23:59:40,
# 23:59:50 and 00:00:00 the next day, so an hourly partitioning has two folders on two days.
MIDNIGHT_BIDS_OPTIONS = (
    "connector = 'nexmark', nexmark.table = 'bid', events.max = '200000', "
    "base.time = '2023-01-01T23:59:35Z'"
)
BIDS_WATERMARK = "WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND"

# Every kind of column a user exports: integers, text, a millisecond timestamp, decimals
# (one cast, one computed by a division), a boolean and a text column with NULLs.
TYPED_COLUMNS = """
    auction,
    channel,
    date_time,
    CAST(price AS DECIMAL(12,2)) AS amount,
    CAST(price AS DECIMAL(12,2)) / 100 AS dollars,
    price > 1000 AS big,
    CASE WHEN price % 7 = 0 THEN NULL ELSE channel END AS maybe_channel
"""
TYPED_NAMES = ["auction", "channel", "date_time", "amount", "dollars", "big", "maybe_channel"]


def connect(server) -> psycopg.Connection:
    return psycopg.connect(server.dsn, autocommit=True)


def create_bids(conn: psycopg.Connection, source: str, options: str = BIDS_OPTIONS) -> None:
    conn.execute(f"CREATE SOURCE {source} ({BIDS_WATERMARK}) WITH ({options})")


def typed_query(source: str) -> str:
    return f"SELECT {TYPED_COLUMNS} FROM {source}"


def window_query(source: str) -> str:
    return (
        "SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top "
        f"FROM TUMBLE({source}, date_time, INTERVAL '10' SECOND) "
        "GROUP BY auction, window_start, window_end"
    )


def pg_rows(conn: psycopg.Connection, sql: str) -> tuple[list[str], list[tuple]]:
    """The column names and rows of a query over pgwire."""
    cur = conn.execute(sql)
    rows = cur.fetchall()
    return [d.name for d in cur.description], rows


def row_key(row) -> tuple:
    """Sorts rows with NULLs (per column, NULL after any value)."""
    return tuple((v is None, v if v is not None else 0) for v in row)


def sort_rows(rows) -> list[tuple]:
    return sorted((tuple(r) for r in rows), key=row_key)


def arrow_rows(table: pa.Table) -> list[tuple]:
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return list(zip(*columns))


def duckdb_rows(sql: str, *params) -> tuple[list[str], list[tuple]]:
    con = duckdb.connect()
    try:
        rel = con.execute(sql, list(params))
        names = [d[0] for d in rel.description]
        return names, rel.fetchall()
    finally:
        con.close()


def hidden_files(directory: Path) -> list[str]:
    """Files a finished export must not leave behind (in-progress files are hidden)."""
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.name.startswith(".") or "inprogress" in p.name
    )


def copy_to(conn: psycopg.Connection, query: str, path: Path, options: str = "") -> int:
    """Runs COPY (query) TO 'path' options and returns the row count of its `COPY n` tag."""
    cur = conn.execute(f"COPY ({query}) TO '{path}' {options}")
    tag = cur.statusmessage or ""
    assert tag.startswith("COPY "), tag
    return int(tag.split()[1])


# --- COPY (query) TO 'file' ------------------------------------------------------------


def test_copy_to_parquet_keeps_types_and_rows(server, name):
    source = name("bids")
    target = server.out_dir / name("typed") / "result.parquet"
    target.parent.mkdir()
    with connect(server) as conn:
        create_bids(conn, source)
        names, expected = pg_rows(conn, typed_query(source))
        assert names == TYPED_NAMES
        assert len(expected) > 1000
        assert any(r[-1] is None for r in expected) and any(r[-1] is not None for r in expected)
        assert {r[5] for r in expected} == {True, False}

        # No FORMAT: the extension says Parquet.
        assert copy_to(conn, typed_query(source), target) == len(expected)

    # Only the finished file is in the folder: no in-progress leftover.
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.parquet"]

    # pyarrow: the schema keeps every SQL type.
    pf = pq.ParquetFile(target)
    schema = pf.schema_arrow
    assert schema.names == TYPED_NAMES
    assert schema.field("auction").type == pa.int64()
    assert schema.field("channel").type in (pa.string(), pa.large_string(), pa.string_view())
    ts = schema.field("date_time").type
    assert pa.types.is_timestamp(ts) and ts.unit == "ms" and ts.tz is None, ts
    # ...and so does the Parquet logical type other readers go by.
    logical = json.loads(pf.schema.column(TYPED_NAMES.index("date_time")).logical_type.to_json())
    assert logical["Type"] == "Timestamp" and logical["timeUnit"] == "milliseconds", logical
    assert logical["isAdjustedToUTC"] is False, logical
    assert schema.field("amount").type == pa.decimal128(12, 2)
    dollars = schema.field("dollars").type
    assert pa.types.is_decimal128(dollars), dollars
    # The scale in the file is the scale pgwire shows: 5.42 comes over pgwire as 5.420000 with
    # DataFusion's division rules, and must not lose digits or change in the file.
    pg_scale = -expected[0][4].as_tuple().exponent
    assert dollars.scale == pg_scale, (dollars, expected[0][4])
    assert dollars.precision >= 12
    assert schema.field("big").type == pa.bool_()
    assert schema.field("maybe_channel").type in (pa.string(), pa.large_string(), pa.string_view())
    assert pf.metadata.num_rows == len(expected)

    table = pq.read_table(target)
    got_arrow = arrow_rows(table)
    assert table.column("maybe_channel").null_count == sum(1 for r in expected if r[-1] is None)
    assert isinstance(got_arrow[0][3], Decimal)
    assert isinstance(got_arrow[0][2], dt.datetime)
    assert sort_rows(got_arrow) == sort_rows(expected)

    # DuckDB reads the same rows, with the same types.
    duck_names, got_duck = duckdb_rows("SELECT * FROM read_parquet(?)", str(target))
    assert duck_names == TYPED_NAMES
    _, duck_types = duckdb_rows("DESCRIBE SELECT * FROM read_parquet(?)", str(target))
    types = {row[0]: row[1] for row in duck_types}
    assert types["auction"] == "BIGINT"
    assert types["date_time"] == "TIMESTAMP"
    assert types["amount"] == "DECIMAL(12,2)"
    assert types["dollars"] == f"DECIMAL({dollars.precision},{dollars.scale})"
    assert types["big"] == "BOOLEAN"
    assert types["maybe_channel"] == "VARCHAR"
    assert sort_rows(got_duck) == sort_rows(expected)
    # Milliseconds survive: some bids share a second but not a millisecond.
    assert any(r[2].microsecond for r in got_duck)


# The codec as pyarrow names it and as the Parquet footer names it (DuckDB's
# parquet_metadata); pyarrow calls Parquet's LZ4_RAW codec "LZ4".
@pytest.mark.parametrize(
    "option,arrow_codec,parquet_codec",
    [
        pytest.param("", "ZSTD", "ZSTD", id="default-zstd"),
        pytest.param("COMPRESSION zstd", "ZSTD", "ZSTD", id="zstd"),
        pytest.param("COMPRESSION snappy", "SNAPPY", "SNAPPY", id="snappy"),
        pytest.param("COMPRESSION gzip", "GZIP", "GZIP", id="gzip"),
        pytest.param("COMPRESSION lz4", "LZ4", "LZ4_RAW", id="lz4"),
        pytest.param("COMPRESSION none", "UNCOMPRESSED", "UNCOMPRESSED", id="none"),
    ],
)
def test_copy_to_parquet_compression_and_row_group_size(
    server, name, option, arrow_codec, parquet_codec
):
    source = name("bids")
    folder = server.out_dir / name("codec")
    folder.mkdir()
    target = folder / "out.parquet"
    options = ", ".join(o for o in ["FORMAT parquet", option, "ROW_GROUP_SIZE 500"] if o)
    with connect(server) as conn:
        create_bids(conn, source)
        _, expected = pg_rows(conn, f"SELECT auction, price, channel FROM {source}")
        count = copy_to(
            conn, f"SELECT auction, price, channel FROM {source}", target, f"WITH ({options})"
        )
    assert count == len(expected) > 1500
    meta = pq.ParquetFile(target).metadata
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    # At most 500 rows per row group: ceil(rows / 500) groups.
    assert meta.num_row_groups == -(-len(expected) // 500), [g.num_rows for g in groups]
    assert all(g.num_rows <= 500 for g in groups), [g.num_rows for g in groups]
    assert sum(g.num_rows for g in groups) == len(expected)
    for g in groups:
        for c in range(g.num_columns):
            assert g.column(c).compression == arrow_codec, (g.column(c).path_in_schema, option)
    _, codecs = duckdb_rows(
        "SELECT DISTINCT compression FROM parquet_metadata(?)", str(target)
    )
    assert codecs == [(parquet_codec,)], option
    assert sort_rows(arrow_rows(pq.read_table(target))) == sort_rows(expected)


def test_copy_to_csv_with_header(server, name):
    source = name("bids")
    folder = server.out_dir / name("csv")
    folder.mkdir()
    with connect(server) as conn:
        create_bids(conn, source)
        names, expected = pg_rows(conn, typed_query(source))
        explicit = folder / "explicit.txt"
        assert copy_to(conn, typed_query(source), explicit, "(FORMAT csv, HEADER)") == len(expected)
        # The format also follows from a .csv extension.
        by_extension = folder / "by_extension.csv"
        assert copy_to(conn, typed_query(source), by_extension, "WITH (HEADER)") == len(expected)
    assert sorted(p.name for p in folder.iterdir()) == ["by_extension.csv", "explicit.txt"]

    for path in (explicit, by_extension):
        assert path.read_text().splitlines()[0] == ",".join(TYPED_NAMES)
        table = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={
                    "auction": pa.int64(),
                    "channel": pa.string(),
                    "date_time": pa.timestamp("ms"),
                    "amount": pa.decimal128(12, 2),
                    "dollars": pa.decimal128(38, 10),
                    "big": pa.bool_(),
                    "maybe_channel": pa.string(),
                },
                # A NULL is an empty field (the data has no empty strings).
                strings_can_be_null=True,
            ),
        )
        assert table.column_names == names
        assert table.num_rows == len(expected)
        assert table.column("maybe_channel").null_count == sum(
            1 for r in expected if r[-1] is None
        )
        assert sort_rows(arrow_rows(table)) == sort_rows(expected)


def test_copy_to_json_lines(server, name):
    source = name("bids")
    target = server.out_dir / name("json") / "out.jsonl"
    target.parent.mkdir()
    with connect(server) as conn:
        create_bids(conn, source)
        names, expected = pg_rows(conn, typed_query(source))
        assert copy_to(conn, typed_query(source), target, "WITH (FORMAT json)") == len(expected)

    lines = target.read_text().splitlines()
    assert len(lines) == len(expected)
    objects = [json.loads(line) for line in lines]
    # Every key is a column name (a NULL may be written as null or left out).
    assert all(set(o) <= set(names) for o in objects)
    assert all(set(names) - {"maybe_channel"} <= set(o) for o in objects)
    first = objects[0]
    assert isinstance(first["auction"], int) and isinstance(first["big"], bool)

    table = pajson.read_json(
        target,
        parse_options=pajson.ParseOptions(
            explicit_schema=pa.schema(
                [
                    ("auction", pa.int64()),
                    ("channel", pa.string()),
                    ("date_time", pa.timestamp("ms")),
                    ("amount", pa.float64()),
                    ("dollars", pa.float64()),
                    ("big", pa.bool_()),
                    ("maybe_channel", pa.string()),
                ]
            )
        ),
    )
    assert table.num_rows == len(expected)
    assert table.column("maybe_channel").null_count == sum(1 for r in expected if r[-1] is None)
    # Decimals come out as JSON numbers: compare them as numbers.
    as_numbers = [
        (a, c, t, float(amount), float(dollars), b, m)
        for a, c, t, amount, dollars, b, m in expected
    ]
    assert sort_rows(arrow_rows(table)) == sort_rows(as_numbers)


# --- CREATE SINK ... WITH (connector = 'parquet') --------------------------------------


def sink_status(conn: psycopg.Connection, sink: str) -> dict[str, str]:
    names, rows = pg_rows(conn, "SHOW SINKS")
    mine = [dict(zip(names, r)) for r in rows if r[0] == sink]
    assert len(mine) == 1, rows
    return mine[0]


def wait_finished(conn: psycopg.Connection, sink: str) -> dict[str, str]:
    deadline = time.monotonic() + SINK_TIMEOUT
    while True:
        status = sink_status(conn, sink)
        if status["status"] != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status["status"] == "finished", status
    return status


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_sink_time_partitions_over_bounded_source(server, name):
    source = name("bids")
    sink = name("sink")
    root = server.out_dir / sink
    with connect(server) as conn:
        create_bids(conn, source, MIDNIGHT_BIDS_OPTIONS)
        names, expected = pg_rows(conn, window_query(source))
        assert names == ["auction", "window_start", "window_end", "n", "top"]
        window_ends = {r[2] for r in expected}
        assert window_ends == {
            dt.datetime(2023, 1, 1, 23, 59, 40),
            dt.datetime(2023, 1, 1, 23, 59, 50),
            dt.datetime(2023, 1, 2, 0, 0, 0),
        }

        conn.execute(
            f"CREATE SINK {sink} AS {window_query(source)} WITH (connector = 'parquet', "
            f"path = '{root}', partition.pattern = 'dt=%Y-%m-%d/hour=%H')"
        )
        status = wait_finished(conn, sink)

        jobs_names, jobs = pg_rows(conn, "SELECT * FROM eddy_jobs")
        job = [dict(zip(jobs_names, j)) for j in jobs if j[jobs_names.index("name")] == sink]
        assert len(job) == 1, jobs
        assert job[0]["status"] == "finished" and job[0]["error"] is None, job[0]

    files = parquet_files(root)
    assert status["connector"] == "parquet"
    assert Path(status["path"]) == root
    assert status["rows"] == str(len(expected))
    assert status["files"] == str(len(files))
    assert status["late_rows"] == "0"

    # One folder per hour of window_end (UTC), each with a _SUCCESS marker, and one at the root.
    folders = {f.parent.relative_to(root).as_posix() for f in files}
    expected_folders = {e.strftime("dt=%Y-%m-%d/hour=%H") for e in window_ends}
    assert folders == {"dt=2023-01-01/hour=23", "dt=2023-01-02/hour=00"} == expected_folders
    assert status["partitions_committed"] == str(len(folders))
    for folder in folders:
        assert (root / folder / "_SUCCESS").is_file(), folder
    assert (root / "_SUCCESS").is_file()
    assert hidden_files(root) == []
    assert all(f.name.startswith("part-") for f in files), files

    # DuckDB reads every file: the same rows as over pgwire.
    glob = f"{root}/**/*.parquet"
    duck_names, got = duckdb_rows(
        "SELECT auction, window_start, window_end, n, top "
        "FROM read_parquet(?, hive_partitioning = false)",
        glob,
    )
    assert len(got) == len(expected)
    assert sort_rows(got) == sort_rows(expected)
    _, counts = duckdb_rows("SELECT count(*) FROM read_parquet(?, hive_partitioning = false)", glob)
    assert counts == [(len(expected),)]

    # Every row sits in the folder of its window_end's hour: [hour, hour + 1 h).
    _, placed = duckdb_rows(
        "SELECT filename, window_end FROM read_parquet(?, hive_partitioning = false, "
        "filename = true)",
        glob,
    )
    for filename, window_end in placed:
        folder = Path(filename).parent.relative_to(root).as_posix()
        hour = dt.datetime.strptime(folder, "dt=%Y-%m-%d/hour=%H")
        assert hour <= window_end < hour + dt.timedelta(hours=1), (folder, window_end)

    # pyarrow reads each file with the query's column names and types.
    for f in files:
        schema = pq.read_schema(f)
        assert schema.names == names, f
        assert pa.types.is_timestamp(schema.field("window_end").type)
        assert schema.field("n").type == pa.int64()


def test_sink_hive_partitions_after_time_folders(server, name):
    source = name("bids")
    sink = name("sink")
    root = server.out_dir / sink
    query = (
        "SELECT auction, price, date_time, "
        "CASE WHEN price > 1000 THEN 'high' ELSE 'low' END AS band "
        f"FROM {source}"
    )
    with connect(server) as conn:
        create_bids(conn, source)
        _, expected = pg_rows(conn, query)
        conn.execute(
            f"CREATE SINK {sink} AS {query} WITH (connector = 'parquet', path = '{root}', "
            "partition.pattern = 'dt=%Y-%m-%d', partition.time_column = 'date_time', "
            "partition.by = 'band', compression = 'snappy', row_group.size = '100')"
        )
        status = wait_finished(conn, sink)
    assert status["rows"] == str(len(expected))

    files = parquet_files(root)
    folders = {f.parent.relative_to(root).as_posix() for f in files}
    assert folders == {"dt=2023-01-01/band=high", "dt=2023-01-01/band=low"}
    for folder in folders:
        assert (root / folder / "_SUCCESS").is_file(), folder
    assert (root / "_SUCCESS").is_file()
    assert hidden_files(root) == []

    _, placed = duckdb_rows(
        "SELECT filename, band FROM read_parquet(?, hive_partitioning = false, filename = true)",
        f"{root}/**/*.parquet",
    )
    assert len(placed) == len(expected)
    for filename, band in placed:
        assert Path(filename).parent.name == f"band={band}", (filename, band)
    _, got = duckdb_rows(
        "SELECT auction, price, date_time, band FROM read_parquet(?, hive_partitioning = false)",
        f"{root}/**/*.parquet",
    )
    assert sort_rows(got) == sort_rows(expected)
    for f in files:
        meta = pq.ParquetFile(f).metadata
        assert meta.row_group(0).column(0).compression == "SNAPPY"
        assert all(meta.row_group(i).num_rows <= 100 for i in range(meta.num_row_groups))


def test_sink_over_endless_source_rolls_files_and_drop_finishes_them(server, name):
    source = name("live")
    sink = name("sink")
    root = server.out_dir / sink
    with connect(server) as conn:
        # No events.max: the source never ends; 2000 events per second of wall-clock time.
        create_bids(
            conn, source, "connector = 'nexmark', nexmark.table = 'bid', events.per.second = '2000'"
        )
        conn.execute(
            f"CREATE SINK {sink} AS SELECT auction, price, date_time FROM {source} "
            f"WITH (connector = 'parquet', path = '{root}', rollover.interval = '1s')"
        )
        # rollover.interval: complete files appear while the job runs.
        deadline = time.monotonic() + SINK_TIMEOUT
        while True:
            status = sink_status(conn, sink)
            if int(status["files"] or 0) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["status"] == "running", status
        assert int(status["files"]) >= 2, status
        running_files = parquet_files(root)
        assert len(running_files) >= 2, running_files
        # Every visible file is complete (readers of `*.parquet` never see a partial one).
        for f in running_files:
            assert pq.read_metadata(f).num_rows > 0, f

    # Dropped from a connection of its own (dropping on the polling connection is
    # test_drop_sink_on_the_connection_that_polled_show_sinks).
    with connect(server) as conn:
        conn.execute(f"DROP SINK {sink}")
        names, rows = pg_rows(conn, "SHOW SINKS")
        assert sink not in [r[0] for r in rows]

    # DROP SINK finished the open file: nothing in progress, every file readable, and the rows
    # written include every row counted before the drop.
    assert hidden_files(root) == []
    files = parquet_files(root)
    assert set(running_files) <= set(files)
    _, total = duckdb_rows("SELECT count(*) FROM read_parquet(?)", f"{root}/*.parquet")
    assert total[0][0] >= int(status["rows"]) > 0
    # The job is gone: no more files or rows.
    time.sleep(1.5)
    assert parquet_files(root) == files
    _, again = duckdb_rows("SELECT count(*) FROM read_parquet(?)", f"{root}/*.parquet")
    assert again == total


def test_drop_sink_on_the_connection_that_polled_show_sinks(server, name):
    """The natural psycopg session: poll SHOW SINKS until the sink is done, then drop it.

    psycopg prepares a statement server-side once it ran `prepare_threshold` (5) times, and
    after any `DROP ...` it clears its prepared statements with `DEALLOCATE ALL`.
    """
    source = name("bids")
    sink = name("sink")
    root = server.out_dir / sink
    with connect(server) as conn:
        create_bids(conn, source)
        conn.execute(
            f"CREATE SINK {sink} AS SELECT auction, price FROM {source} "
            f"WITH (connector = 'parquet', path = '{root}')"
        )
        wait_finished(conn, sink)
        for _ in range(conn.prepare_threshold + 1):
            sink_status(conn, sink)
        conn.execute(f"DROP SINK {sink}")
        _, rows = pg_rows(conn, "SHOW SINKS")
        assert sink not in [r[0] for r in rows]
    assert (root / "_SUCCESS").is_file()


# --- where files may go ----------------------------------------------------------------


def test_paths_outside_allowed_directories_are_refused(server, name):
    source = name("bids")
    escape = name("escape")
    refused = [
        Path(f"/etc/{escape}.parquet"),
        # `..` out of the allowed folder (to the folder above the server's temp dir).
        server.out_dir / ".." / ".." / f"{escape}.parquet",
        server.data_dir / ".." / ".." / f"{escape}.csv",
    ]
    try:
        with connect(server) as conn:
            create_bids(conn, source)
            for path in refused:
                with pytest.raises(psycopg.Error) as err:
                    conn.execute(f"COPY (SELECT auction FROM {source}) TO '{path}'")
                assert err.value.sqlstate == "42501", (path, err.value.sqlstate, str(err.value))
                assert not path.exists(), path
            sink_dir = Path(f"/etc/{escape}")
            with pytest.raises(psycopg.Error) as err:
                conn.execute(
                    f"CREATE SINK {name('sink')} AS SELECT auction FROM {source} "
                    f"WITH (connector = 'parquet', path = '{sink_dir}')"
                )
            assert err.value.sqlstate == "42501", (err.value.sqlstate, str(err.value))
            assert not sink_dir.exists()

            # The data directory and --allow-path directories are allowed.
            inside = [server.data_dir / f"{escape}.parquet", server.out_dir / f"{escape}.parquet"]
            for path in inside:
                assert copy_to(conn, f"SELECT auction FROM {source}", path) > 0
                assert pq.read_metadata(path).num_rows > 0
    finally:
        # A server that wrongly wrote outside leaves nothing behind on this machine.
        for path in refused:
            path.unlink(missing_ok=True)
        shutil.rmtree(f"/etc/{escape}", ignore_errors=True)
