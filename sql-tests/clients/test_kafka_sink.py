"""Kafka sinks (`CREATE SINK ... WITH (connector = 'kafka' | 'upsert-kafka')`) against a real
Kafka-protocol broker (tansu, as in test_kafka.py), read back with kafka-python.

- A bounded Nexmark query sunk as JSON and as CSV messages, keyed by `auction`: the topic holds
  exactly the rows `COPY (query) TO STDOUT` returns, each with its key, every key on one
  partition; and a kafka source with the same columns reads the topic back as those rows.
- upsert-kafka: an aggregate's changelog becomes keyed upserts, and a group that a `HAVING`
  drops becomes a tombstone (a message with a null value); a plain kafka sink refuses the
  changelog, pointing at upsert-kafka. An upsert-kafka source reads the topic back as that
  changelog.
- exactly-once: the rows arrive, each once, in transactions that commit with the sink's
  checkpoints (the transactional id's marker offset is committed); without checkpoints it is
  refused. (tansu returns aborted records to `read_committed` readers, so what a reader would
  *not* see cannot be checked here: the unit tests check the commit/abort sequence.)
- at-least-once and exactly-once: a sink killed with SIGKILL mid-way and restarted from its
  checkpoint has written every row of its query (exactly-once: the restart fences the killed
  run's producer and checks that the restored checkpoint's transaction committed).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time

import psycopg
import pytest

from conftest import EddyServer
from test_kafka import (  # noqa: F401 (fixtures: broker, restartable)
    broker,
    connect,
    create_topic,
    job,
    restartable,
    wait_for,
)

kafka = pytest.importorskip("kafka")
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

BID_COLUMNS = "auction, bidder, price, date_time"


def read_topic(broker: str, topic: str, partitions: int, at_least: int, timeout: float = 30.0):
    """Every message of the topic, once `at_least` have arrived and a poll brings no more."""
    consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        messages = []
        deadline = time.monotonic() + timeout
        while True:
            batch = consumer.poll(timeout_ms=500)
            got = [m for records in batch.values() for m in records]
            messages.extend(got)
            if len(messages) >= at_least and not got:
                return messages
            if time.monotonic() > deadline:
                pytest.fail(f"topic {topic}: {len(messages)} messages, expected {at_least}")
    finally:
        consumer.close()


def copy_rows(conn: psycopg.Connection, query: str) -> list[list[str]]:
    """The query's rows as `COPY (...) TO STDOUT WITH (FORMAT csv)` sends them."""
    out = io.StringIO()
    with conn.cursor().copy(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)") as copy:
        for data in copy:
            out.write(bytes(data).decode())
    return list(csv.reader(io.StringIO(out.getvalue())))


def bid(auction, bidder, price, date_time) -> tuple:
    return (int(auction), int(bidder), int(price), dt.datetime.fromisoformat(date_time))


def wait_finished(conn: psycopg.Connection, name: str, server: EddyServer) -> dict:
    return wait_for(
        f"sink {name} to finish",
        lambda: (j := job(conn, name))["status"] != "running" and j,
        server=server,
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_a_sink_writes_the_querys_rows_keyed_and_a_kafka_source_reads_them_back(
    server, broker, name, fmt
):
    topic = create_topic(broker, 3)
    src, sink = name("bids"), name("sink")
    query = f"SELECT {BID_COLUMNS} FROM {src}"
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE {src} WITH (connector = 'nexmark', nexmark.table = 'bid', "
            "events.max = '3000')"
        )
        conn.execute(
            f"CREATE SINK {sink} AS {query} WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = '{fmt}', "
            "key.format = 'json', key.fields = 'auction')"
        )
        expected = sorted(bid(*r) for r in copy_rows(conn, query))
        finished = wait_finished(conn, sink, server)
        assert finished["status"] == "finished", finished
        sinks = {r[0]: r for r in conn.execute("SHOW SINKS").fetchall()}
        assert sinks[sink][1:3] == ("kafka", topic)
        assert sinks[sink][5] == str(len(expected))

    messages = read_topic(broker, topic, 3, len(expected))
    assert len(messages) == len(expected)
    got = []
    partition_of: dict[bytes, set[int]] = {}
    for m in messages:
        if fmt == "json":
            value = json.loads(m.value)
            assert list(value) == ["auction", "bidder", "price", "date_time"], value
            # Flink's SQL timestamp format, at TIMESTAMP(3)'s precision.
            assert len(value["date_time"]) == len("2023-01-01 00:00:00.000"), value
            row = bid(**value)
        else:
            row = bid(*next(csv.reader([m.value.decode()])))
        assert json.loads(m.key) == {"auction": row[0]}
        partition_of.setdefault(m.key, set()).add(m.partition)
        got.append(row)
    assert sorted(got) == expected
    # Keyed messages: each key on one partition, the keys spread over all three.
    assert all(len(p) == 1 for p in partition_of.values())
    assert set().union(*partition_of.values()) == {0, 1, 2}

    # A kafka source with the same columns reads the topic back as the same rows.
    back = name("back")
    with connect(server) as conn:
        conn.execute(
            f"CREATE SOURCE {back} (auction BIGINT, bidder BIGINT, price BIGINT, "
            f"date_time TIMESTAMP(3)) WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = '{fmt}', "
            "scan.bounded.mode = 'latest-offset')"
        )
        read_back = sorted(conn.execute(f"SELECT {BID_COLUMNS} FROM {back}").fetchall())
        assert read_back == sorted(conn.execute(query).fetchall())


def test_upsert_kafka_writes_an_aggregates_changelog_with_tombstones(server, broker, name):
    topic = create_topic(broker, 2)
    table, sink = name("clicks"), name("counts")
    # A user's count while it is below 3: the third click drops the group (a tombstone).
    query = f"SELECT k, count(*) AS n, sum(v) AS total FROM {table} GROUP BY k HAVING count(*) < 3"
    with connect(server) as conn:
        conn.execute(f"CREATE TABLE {table} (k VARCHAR, v BIGINT)")
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="upsert-kafka"):
            conn.execute(
                f"CREATE SINK {sink} AS {query} WITH (connector = 'kafka', topic = '{topic}', "
                f"properties.bootstrap.servers = '{broker}', format = 'json')"
            )
        conn.execute(
            f"CREATE SINK {sink} AS {query} WITH (connector = 'upsert-kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', "
            "key.format = 'raw', key.fields = 'k', value.format = 'json')"
        )
        for k, v in [("a", 1), ("b", 10), ("a", 2), ("a", 3)]:
            conn.execute(f"INSERT INTO {table} VALUES ('{k}', {v})")

    messages = read_topic(broker, topic, 2, 4)
    by_key: dict[str, list] = {}
    for m in sorted(messages, key=lambda m: (m.partition, m.offset)):
        by_key.setdefault(m.key.decode(), []).append(
            None if m.value is None else json.loads(m.value)
        )
    assert by_key == {
        "a": [{"k": "a", "n": 1, "total": 1}, {"k": "a", "n": 2, "total": 3}, None],
        "b": [{"k": "b", "n": 1, "total": 10}],
    }
    with connect(server) as conn:
        conn.execute(f"DROP SINK {sink}")
        # An upsert-kafka source reads the topic back as the changelog of the final counts:
        # "a" is upserted twice, then deleted by its tombstone.
        back = name("back")
        conn.execute(
            f"CREATE SOURCE {back} (k VARCHAR, n BIGINT, total BIGINT, "
            "PRIMARY KEY (k) NOT ENFORCED) WITH (connector = 'upsert-kafka', "
            f"topic = '{topic}', properties.bootstrap.servers = '{broker}', "
            "key.format = 'raw', value.format = 'json', scan.bounded.mode = 'latest-offset')"
        )
        changes = conn.execute(f"SELECT k, n, total FROM {back}").fetchall()
    assert [c for c in changes if c[1] == "a"] == [
        ("+", "a", 1, 1),
        ("-", "a", 1, 1),
        ("+", "a", 2, 3),
        ("-", "a", 2, 3),
    ]
    assert [c for c in changes if c[1] == "b"] == [("+", "b", 1, 10)]


def marker(broker: str, topic: str, transactional_id: str):
    """The offset the sink's transactions commit for their marker group (see transaction.rs)."""
    consumer = KafkaConsumer(
        bootstrap_servers=broker, group_id=transactional_id, enable_auto_commit=False
    )
    try:
        return consumer.committed(TopicPartition(topic, 0))
    finally:
        consumer.close()


def test_exactly_once_commits_with_checkpoints_and_needs_them(server, broker, name):
    topic = create_topic(broker, 1)
    table, sink = name("events"), name("eo")
    with connect(server) as conn:
        conn.execute(f"CREATE TABLE {table} (id BIGINT, s VARCHAR)")
        base = (
            f"WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            "sink.delivery-guarantee = 'exactly-once'"
        )
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="without checkpoints"):
            conn.execute(
                f"CREATE SINK {sink} AS SELECT * FROM {table} "
                f"{base}, checkpoint.interval = '0')"
            )
        conn.execute(
            f"CREATE SINK {sink} AS SELECT * FROM {table} "
            f"{base}, sink.transactional-id-prefix = 'test', checkpoint.interval = '1s')"
        )
        transactional_id = f"test-{sink}-0"
        assert marker(broker, topic, transactional_id) is None
        conn.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
        first = wait_for(
            "the first transaction to commit with a checkpoint",
            lambda: marker(broker, topic, transactional_id),
            server=server,
        )
        conn.execute(f"INSERT INTO {table} VALUES (3, 'c')")
        wait_for(
            "the next transaction to commit",
            lambda: marker(broker, topic, transactional_id) not in (None, first),
            server=server,
        )
        assert job(conn, sink)["status"] == "running"
        conn.execute(f"DROP SINK {sink}")
    values = [json.loads(m.value) for m in read_topic(broker, topic, 1, 3)]
    assert sorted(v["id"] for v in values) == [1, 2, 3]


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_a_sink_loses_nothing_across_a_sigkill(restartable, broker, guarantee):
    topic = create_topic(broker, 2)
    s = restartable()
    # 9000 events at 3000 per second: the sink runs for about three seconds.
    source = (
        "CREATE SOURCE bids WITH (connector = 'nexmark', nexmark.table = 'bid', "
        "events.max = '9000', events.per.second = '3000')"
    )
    query = f"SELECT {BID_COLUMNS} FROM bids"
    with connect(s) as conn:
        conn.execute(source)
        conn.execute(
            f"CREATE SINK k AS {query} WITH (connector = 'kafka', topic = '{topic}', "
            f"properties.bootstrap.servers = '{broker}', format = 'json', "
            f"key.format = 'json', key.fields = 'auction', "
            f"sink.delivery-guarantee = '{guarantee}')"
        )
        wait_for(
            "a checkpoint of the sink with rows written",
            lambda: (j := job(conn, "k"))["last_checkpoint"] is not None and j["rows_out"] > 0,
            server=s,
        )
        assert job(conn, "k")["status"] == "running"
    s.kill()
    s.start()
    with connect(s) as conn:
        restarted = job(conn, "k")
        assert restarted["restored_from"] is not None, restarted
        finished = wait_finished(conn, "k", s)
        assert finished["status"] == "finished", finished
        # It ran again after the restart (a sink restored as finished would read nothing).
        assert finished["rows_in"] > 0, finished
        # The same bounded, deterministic source read by a client query.
        expected = sorted(bid(*r) for r in copy_rows(conn, query))
    messages = read_topic(broker, topic, 2, len(expected))
    got = [bid(**json.loads(m.value)) for m in messages]
    # Every row at least once; rows after the restored checkpoint may come twice.
    assert set(got) == set(expected)
    assert len(got) >= len(expected)
