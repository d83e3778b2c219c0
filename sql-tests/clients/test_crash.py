"""Crash recovery: exactly-once checkpoints of background jobs, and durable INSERTs.

Background jobs (a window aggregate into time-partitioned Parquet folders, an interval join
and MATCH_RECOGNIZE into Parquet sinks; a sliding-window view and an updating view) run over
bounded, paced Nexmark sources with a 500 ms checkpoint interval. The server is killed with
SIGKILL at three random moments and started again on the same data directory and port, then
runs until every job has finished. The finished files (rows, folders, `_SUCCESS` markers) and
the views must equal, row for row, those of a second server that ran the same statements at
the same time without interruption: a row exported or counted twice, or lost, fails the test.
Along the way: after each restart, every job that had completed a checkpoint is restored from
it (`eddy_jobs.restored_from`); a file visible at a kill is complete and never changes or
goes; no hidden (pending, in-progress) file is left at the end; `SHOW CHECKPOINTS` and
`eddy_checkpoints` agree. A last kill after everything finished changes nothing.

Rows of INSERT, COPY FROM and COMMIT are on disk once acknowledged: a server killed right
after an acknowledgement, or while clients insert, or during a COMMIT, has every acknowledged
row once after the restart (in the table and in views over it, restored or new), and the
statement or transaction in flight at the kill entirely or not at all.

The kill moments come from a seeded random generator; the seed is printed and attached to any
failure, and `EDDY_CRASH_SEED=<n>` replays a run's schedule. `EDDY_CRASH_KEEP=1` keeps the
servers' folders (data, out, server.log) for a look after the run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from conftest import EddyServer, _servers, eddy_binary

# The whole event stream (bids, auctions and people together): 20000 events at 2000 events/s
# is 10 s of wall time and of event time (event n is stamped at n / 2000 s), 18400 bids and
# 1200 auctions.
EVENTS_MAX = 20000
EVENTS_PER_SECOND = 2000
NEXMARK = (
    f"connector = 'nexmark', events.max = '{EVENTS_MAX}', "
    f"events.per.second = '{EVENTS_PER_SECOND}'"
)
WATERMARK = "WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND"
CHECKPOINT = "checkpoint.interval = '500ms'"
# The same, with the key quoted (one of the views spells it so).
QUOTED_CHECKPOINT = "'checkpoint.interval' = '500ms'"

FINISH_TIMEOUT = 60.0
STARTUP_RETRY = 60.0


def seed_from_env() -> int:
    explicit = os.environ.get("EDDY_CRASH_SEED")
    if explicit:
        return int(explicit)
    return random.SystemRandom().randrange(2**31)


@pytest.fixture
def crash_seed():
    """The seed of this test's random moments: printed, and attached to a failure."""
    seed = seed_from_env()
    print(f"crash seed: {seed} (replay with EDDY_CRASH_SEED={seed})")
    return seed


@pytest.fixture
def make_server():
    """Starts servers of the test's own (fresh data directories, extra flags); every one is
    stopped and deleted at the end, whatever happened."""
    made: list[EddyServer] = []

    def make(extra_args: list[str] | tuple[str, ...] = ()) -> EddyServer:
        s = EddyServer(eddy_binary(), extra_args)
        _servers.append(s)
        made.append(s)
        start(s)
        return s

    try:
        yield make
    finally:
        keep = os.environ.get("EDDY_CRASH_KEEP") == "1"
        for s in made:
            if keep:
                s.terminate()
                print(f"kept (EDDY_CRASH_KEEP=1): {s.tmp}")
            else:
                s.stop()
            if s in _servers:
                _servers.remove(s)


def start(s: EddyServer) -> None:
    """Starts (or restarts) `s` on its data directory and port; waits for the binary while a
    build replaces it."""
    deadline = time.monotonic() + STARTUP_RETRY
    while True:
        while not s.binary.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            s.start()
            return
        except OSError:
            # The binary vanished (or was being written) between the check and the exec.
            s.proc = None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def connect(s: EddyServer) -> psycopg.Connection:
    return psycopg.connect(s.dsn, autocommit=True)


@contextlib.contextmanager
def with_seed(seed: int):
    """A failure inside names the seed that replays it."""
    try:
        yield
    except BaseException as e:
        e.add_note(f"crash seed: {seed} (replay with EDDY_CRASH_SEED={seed})")
        raise


# --- background jobs through kills -----------------------------------------------------


def job_statements(out_dir: Path) -> dict[str, str]:
    """The jobs, by name: three Parquet sinks and two views, each checkpointing every 500 ms."""
    return {
        # A window aggregate, into one folder per second of window_end (each folder gets its
        # _SUCCESS when the watermark passes it: pending markers are committed too).
        "win_sink": f"""
            CREATE SINK win_sink AS
            SELECT auction, window_start, window_end, count(*) AS n, max(price) AS top,
                   sum(price) AS total
            FROM TUMBLE(bids, date_time, INTERVAL '1' SECOND)
            GROUP BY auction, window_start, window_end
            WITH (connector = 'parquet', path = '{out_dir / "win_sink"}',
                  partition.pattern = 'dt=%Y-%m-%d/%H%M/s=%S', {CHECKPOINT})""",
        # An interval join: each auction with the bids on it in its first two seconds.
        "join_sink": f"""
            CREATE SINK join_sink AS
            SELECT a.id AS auction, a.seller, a.category, a.initial_bid, b.bidder, b.price,
                   b.date_time AS bid_time
            FROM auctions a JOIN bids b
              ON a.id = b.auction
             AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '2' SECOND
            WITH (connector = 'parquet', path = '{out_dir / "join_sink"}', {CHECKPOINT})""",
        # A pattern per auction: a price that rises one or more times, then falls.
        "pattern_sink": f"""
            CREATE SINK pattern_sink AS
            SELECT * FROM bids MATCH_RECOGNIZE (
                PARTITION BY auction
                ORDER BY date_time
                MEASURES A.date_time AS start_time, A.price AS start_price,
                         LAST(UP.price) AS top_price, DOWN.price AS end_price,
                         DOWN.date_time AS end_time, count(UP.price) AS ups,
                         MATCH_NUMBER() AS match_no
                ONE ROW PER MATCH
                AFTER MATCH SKIP PAST LAST ROW
                PATTERN (A UP+ DOWN)
                DEFINE UP AS price > PREV(price), DOWN AS price < PREV(price))
            WITH (connector = 'parquet', path = '{out_dir / "pattern_sink"}', {CHECKPOINT})""",
        # A sliding-window view (append): its operator state and its rows are checkpointed.
        "window_view": f"""
            CREATE MATERIALIZED VIEW window_view WITH ({CHECKPOINT}) AS
            SELECT channel, window_start, window_end, count(*) AS n, max(price) AS top,
                   count(DISTINCT bidder) AS bidders
            FROM HOP(bids, date_time, INTERVAL '1' SECOND, INTERVAL '2' SECOND)
            GROUP BY channel, window_start, window_end""",
        # An updating view: an aggregate without a window, one row per bidder.
        "updating_view": f"""
            CREATE MATERIALIZED VIEW updating_view WITH ({QUOTED_CHECKPOINT}) AS
            SELECT bidder, count(*) AS n, max(price) AS top, sum(price) AS total,
                   min(date_time) AS first_bid
            FROM bids GROUP BY bidder""",
    }


SINKS = ["win_sink", "join_sink", "pattern_sink"]
VIEWS = ["window_view", "updating_view"]
JOBS = SINKS + VIEWS


def create_jobs(s: EddyServer) -> None:
    with connect(s) as conn:
        conn.execute(f"CREATE SOURCE bids ({WATERMARK}) WITH ({NEXMARK}, nexmark.table = 'bid')")
        conn.execute(
            f"CREATE SOURCE auctions ({WATERMARK}) WITH ({NEXMARK}, nexmark.table = 'auction')"
        )
        for sql in job_statements(s.out_dir).values():
            conn.execute(sql)


def jobs(conn: psycopg.Connection) -> dict[str, dict]:
    cur = conn.execute("SELECT * FROM eddy_jobs")
    names = [d.name for d in cur.description]
    return {r[names.index("name")]: dict(zip(names, r)) for r in cur.fetchall()}


def checkpoints(conn: psycopg.Connection) -> list[dict]:
    cur = conn.execute("SHOW CHECKPOINTS")
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def brief(job: dict) -> str:
    keys = ["status", "rows_in", "rows_out", "late_rows", "last_checkpoint", "restored_from"]
    figures = ", ".join(f"{k}={job.get(k)}" for k in keys)
    return f"{job['name']}({figures}, error={job.get('error')})"


def wait_finished(s: EddyServer, timeout: float = FINISH_TIMEOUT) -> dict[str, dict]:
    """Polls eddy_jobs until every job is finished; a failed job fails at once."""
    deadline = time.monotonic() + timeout
    with connect(s) as conn:
        while True:
            now = jobs(conn)
            failed = [brief(j) for j in now.values() if j["status"] == "failed"]
            assert not failed, f"jobs failed on {s.port}: {failed}"
            if set(now) == set(JOBS) and all(j["status"] == "finished" for j in now.values()):
                return now
            if time.monotonic() > deadline:
                pytest.fail(
                    f"jobs not finished within {timeout}s: "
                    + "; ".join(brief(j) for j in now.values())
                )
            time.sleep(0.2)


def is_hidden(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return any(part.startswith(".") for part in rel.parts) or (
        "inprogress" in path.name or "pending" in path.name
    )


def hidden_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if is_hidden(p, root))


def visible_files(root: Path) -> dict[str, bytes]:
    """The visible Parquet files and `_SUCCESS` markers under root: path -> contents."""
    out = {}
    if not root.exists():
        return out
    for p in sorted(root.rglob("*")):
        if p.is_file() and not is_hidden(p, root):
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def row_key(row) -> tuple:
    return tuple((v is None, v if v is not None else 0) for v in row)


def sink_rows(root: Path) -> tuple[list[str], list[tuple]]:
    """Every visible row of a sink's folder (as pyarrow reads it), with the folder it is in."""
    names = None
    rows = []
    for f in sorted(root.rglob("*.parquet")):
        if is_hidden(f, root):
            continue
        table = pq.read_table(f)
        if names is None:
            names = table.column_names
        assert table.column_names == names, (f, table.column_names, names)
        folder = f.parent.relative_to(root).as_posix()
        columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
        rows.extend((folder, *r) for r in zip(*columns))
    return names or [], sorted(rows, key=row_key)


def view_rows(conn: psycopg.Connection, view: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(f"SELECT * FROM {view}")
    return [d.name for d in cur.description], sorted(cur.fetchall(), key=row_key)


def row_differences(what: str, got: list[tuple], expected: list[tuple]) -> list[str]:
    """Compares as multisets (both lists are sorted): how many rows are missing or extra."""
    if got == expected:
        return []
    g, e = Counter(got), Counter(expected)
    missing = e - g
    extra = g - e
    return [
        f"{what}: {len(got)} rows, the uninterrupted run has {len(expected)}; "
        f"{sum(missing.values())} missing (e.g. {list(missing.items())[:3]}), "
        f"{sum(extra.values())} extra or duplicated (e.g. {list(extra.items())[:3]})"
    ]


def check_visible_files_readable(s: EddyServer) -> None:
    """Right after a kill: every visible file is a complete Parquet file."""
    for sink in SINKS:
        root = s.out_dir / sink
        for rel in visible_files(root):
            if rel.endswith(".parquet"):
                pq.read_metadata(root / rel)  # raises on a torn file


@pytest.mark.timeout(75)
def test_jobs_survive_sigkill_exactly_once(make_server, crash_seed):
    rng = random.Random(crash_seed)
    # Kill moments, in seconds after each (re)start: the first leaves time for checkpoints;
    # of the others, one comes early, around the new run's first checkpoint (when it comes
    # before, the job restores the older one again), one late. Their sum (3.4 to 7 s) stays
    # below the 10 s of input, so each kill hits running jobs, and windows have closed
    # (from 2 s of event time on) before the last one.
    later = [rng.uniform(0.4, 1.0), rng.uniform(1.5, 3.0)]
    rng.shuffle(later)
    delays = [rng.uniform(1.5, 3.0), *later]
    print("kill delays:", [round(d, 2) for d in delays])

    with with_seed(crash_seed):
        # The reference: the same statements on a server that is never interrupted, running
        # at the same time.
        reference = make_server()
        crashing = make_server()  # the default interval (10s): the jobs' own 500ms wins
        create_jobs(reference)
        create_jobs(crashing)

        committed: dict[str, dict[str, bytes]] = {sink: {} for sink in SINKS}
        restores: dict[str, list[int]] = {job: [] for job in JOBS}
        for i, delay in enumerate(delays):
            time.sleep(delay)
            with connect(crashing) as conn:
                before = jobs(conn)
            # Files visible now are committed: they must survive, unchanged.
            for sink in SINKS:
                committed[sink].update(visible_files(crashing.out_dir / sink))
            crashing.kill()
            running = [j for j in before.values() if j["status"] == "running"]
            assert running, f"kill {i + 1}: no job was running: {list(before.values())}"
            if i == 0:
                # 1.5 s or more of 500 ms checkpoints: every job has one.
                missing = [brief(j) for j in before.values() if j["last_checkpoint"] is None]
                assert not missing, f"no completed checkpoint before the first kill: {missing}"
            check_visible_files_readable(crashing)
            for sink in SINKS:
                now = visible_files(crashing.out_dir / sink)
                gone = sorted(set(committed[sink]) - set(now))
                assert not gone, f"kill {i + 1}: {sink}: visible files vanished: {gone}"

            start(crashing)
            with connect(crashing) as conn:
                after = jobs(conn)
            assert set(after) == set(JOBS), after
            for job in running:
                name = job["name"]
                if job["last_checkpoint"] is None:
                    continue
                restored = after[name]["restored_from"]
                assert restored is not None and restored >= job["last_checkpoint"], (
                    f"kill {i + 1}: {name} had completed checkpoint {job['last_checkpoint']} "
                    f"before the kill, but restored_from is {restored}: {brief(after[name])}"
                )
                restores[name].append(restored)
            print(
                f"kill {i + 1} after {delay:.2f}s:",
                {j["name"]: (j["status"], j["last_checkpoint"]) for j in before.values()},
                "-> restored_from",
                {n: j["restored_from"] for n, j in after.items()},
            )

        never = [job for job, r in restores.items() if not r]
        assert not never, f"jobs never restored from a checkpoint: {never}"

        wait_finished(crashing)
        wait_finished(reference)
        def compare(stage: str) -> None:
            """Every difference from the reference, all reported at once."""
            problems: list[str] = []
            for sink in SINKS:
                got_root = crashing.out_dir / sink
                ref_root = reference.out_dir / sink
                got_names, got = sink_rows(got_root)
                ref_names, expected = sink_rows(ref_root)
                if got_names != ref_names:
                    problems.append(f"{sink}: columns {got_names}, reference {ref_names}")
                problems += row_differences(f"sink {sink}", got, expected)
                hidden = hidden_files(got_root)
                if hidden:
                    problems.append(f"{sink}: hidden files remain: {hidden}")
                if not (got_root / "_SUCCESS").is_file():
                    problems.append(f"{sink}: no _SUCCESS at the root")
                # Every partition folder is marked complete, as in the reference.
                now = visible_files(got_root)
                markers = {k for k in now if k.endswith("_SUCCESS")}
                ref_markers = {k for k in visible_files(ref_root) if k.endswith("_SUCCESS")}
                if markers != ref_markers:
                    problems.append(
                        f"{sink}: _SUCCESS markers missing: {sorted(ref_markers - markers)}, "
                        f"extra: {sorted(markers - ref_markers)}"
                    )
                # Committed files were never replaced or removed.
                for rel, data in committed[sink].items():
                    if rel not in now:
                        problems.append(f"{sink}: committed {rel} vanished")
                    elif now[rel] != data:
                        problems.append(f"{sink}: committed {rel} changed")
            with connect(crashing) as got_conn, connect(reference) as ref_conn:
                for view in VIEWS:
                    got_names, got = view_rows(got_conn, view)
                    ref_names, expected = view_rows(ref_conn, view)
                    if got_names != ref_names:
                        problems.append(f"{view}: columns {got_names}, reference {ref_names}")
                    problems += row_differences(f"view {view}", got, expected)
            assert not problems, f"{stage}:\n" + "\n".join(problems)

        # The reference is not trivial: every job produced rows.
        with connect(reference) as conn:
            for view in VIEWS:
                assert len(view_rows(conn, view)[1]) > 100, view
        for sink in SINKS:
            assert len(sink_rows(reference.out_dir / sink)[1]) > 500, sink

        compare("after the kills")

        # SHOW CHECKPOINTS: the last run's checkpoints of each job.
        with connect(crashing) as conn:
            cur = conn.execute("SHOW CHECKPOINTS")
            assert [d.name for d in cur.description] == [
                "job", "epoch", "status", "started_at", "duration_ms", "state_bytes", "error"
            ]
            history = checkpoints(conn)
        last = {}
        for c in history:
            last[c["job"]] = c
        for c in history:
            assert c["job"] in JOBS, c
            assert c["status"] in ("completed", "failed", "in_progress"), c
            assert (c["error"] is None) == (c["status"] != "failed"), c
            if c["status"] == "completed":
                # A sink's final checkpoint holds no state: it says only that the sink
                # finished (its files are all published).
                final_sink = c["job"] in SINKS and c is last[c["job"]]
                assert c["duration_ms"] is not None, c
                assert c["state_bytes"] > 0 or (final_sink and c["state_bytes"] == 0), c
        # Every job that ran to its end in the last run ends with its final checkpoint,
        # completed (never an attempt the end of input cut short).
        cut_short = [c for c in last.values() if c["status"] != "completed"]
        assert not cut_short, f"last checkpoints not completed: {cut_short}"
        # The system table holds the same history (all jobs have finished: it is final).
        with connect(crashing) as conn:
            table = conn.execute("SELECT job, epoch, status FROM eddy_checkpoints").fetchall()
        assert sorted(table) == sorted((c["job"], c["epoch"], c["status"]) for c in history)

        # Killed once more after everything finished: every job comes back from its final
        # checkpoint as finished, without running: finished sinks stay as they are, and the
        # views come back with the same contents.
        for sink in SINKS:
            committed[sink] = visible_files(crashing.out_dir / sink)
        with connect(crashing) as conn:
            final = jobs(conn)
        crashing.kill()
        start(crashing)
        with connect(crashing) as conn:
            after = jobs(conn)
        not_final = [
            brief(j)
            for name, j in after.items()
            if (j["status"], j["restored_from"], j["rows_in"])
            != ("finished", final[name]["last_checkpoint"], 0)
        ]
        assert not not_final, f"not restored finished from the final checkpoints: {not_final}"
        wait_finished(crashing)
        compare("after a kill once finished")


# --- acknowledged INSERTs through kills ------------------------------------------------


def row(i: int) -> tuple:
    """The row of id i."""
    return (i, f"k{i % 5}", dt.datetime(2024, 1, 1) + dt.timedelta(milliseconds=i))


UNIT = 8  # rows per transaction, COPY or multi-row INSERT of the "mixed" inserter


class Inserter(threading.Thread):
    """Inserts units of rows (ids from `first` on) on a connection of its own until the
    server goes away: single-row INSERTs (`mode="insert"`), or in turn a transaction of
    `UNIT` single-row INSERTs, a COPY FROM STDIN of `UNIT` rows and one INSERT of `UNIT` rows
    (`mode="mixed"`). `acked` holds the ids of the units the server acknowledged, `in_flight`
    the unit sent when the connection broke (which may or may not have made it, all or
    nothing: a unit is one statement or one transaction)."""

    def __init__(self, s: EddyServer, first: int, mode: str):
        super().__init__(daemon=True)
        self.s = s
        self.next_id = first
        self.mode = mode
        self.acked: list[list[int]] = []
        self.in_flight: tuple[str, list[int]] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = connect(self.s)
        except psycopg.Error as e:
            self.error = e
            return
        try:
            for n in range(1_000_000):
                kind = self.mode if self.mode != "mixed" else ("txn", "copy", "values")[n % 3]
                size = 1 if kind == "insert" else UNIT
                ids = list(range(self.next_id, self.next_id + size))
                self.next_id += size
                self.in_flight = (kind, ids)
                if kind == "insert":
                    conn.execute("INSERT INTO events VALUES (%s, %s, %s)", row(ids[0]))
                elif kind == "txn":
                    with conn.transaction():
                        for i in ids:
                            conn.execute("INSERT INTO events VALUES (%s, %s, %s)", row(i))
                elif kind == "copy":
                    with conn.cursor().copy("COPY events (id, k, ts) FROM STDIN") as copy:
                        for i in ids:
                            copy.write_row(row(i))
                else:
                    values = ", ".join(["(%s, %s, %s)"] * len(ids))
                    params = [v for i in ids for v in row(i)]
                    conn.execute(f"INSERT INTO events VALUES {values}", params)
                self.acked.append(ids)
                self.in_flight = None
        except psycopg.Error:
            pass  # the server was killed
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


def table_rows(conn: psycopg.Connection, table: str) -> int:
    cur = conn.execute("SHOW TABLES")
    names = [d.name for d in cur.description]
    for r in cur.fetchall():
        if r[names.index("name")] == table:
            return int(r[names.index("rows")])
    raise AssertionError(f"table {table} not in SHOW TABLES")


def wait_view_count(conn: psycopg.Connection, view: str, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = conn.execute(f"SELECT count(*) FROM {view}").fetchone()[0]
        assert got <= n, f"view {view} holds {got} rows, the table {n}: rows counted twice"
        if got == n:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"view {view} holds {got} rows, the table {n}, after {timeout}s")
        time.sleep(0.1)


def check_acknowledged(
    s: EddyServer,
    acked: list[list[int]],
    maybe: list[tuple[str, list[int]]],
    views: list[str],
) -> Counter:
    """Every acknowledged unit is in the table and in each view once; an unacknowledged one
    (in flight at the kill) is there entirely or not at all; nothing else."""
    with connect(s) as conn:
        n = table_rows(conn, "events")
        # The table's own rows: a query over it reads from its first row; LIMIT ends it.
        ids = [r[0] for r in conn.execute(f"SELECT id FROM events LIMIT {n}").fetchall()]
        assert len(ids) == n
        counts = Counter(ids)
        twice = sorted(i for i, c in counts.items() if c > 1)
        assert not twice, f"ids stored twice in the table: {twice[:10]}"
        want = {i for unit in acked for i in unit}
        lost = sorted(want - set(counts))
        assert not lost, f"{len(lost)} acknowledged rows lost (of {len(want)}): {lost[:10]}"
        allowed = want | {i for _, unit in maybe for i in unit}
        stray = sorted(set(counts) - allowed)
        assert not stray, f"rows that were never inserted: {stray[:10]}"
        for kind, unit in maybe:
            # In flight at the kill: a statement or a transaction is stored whole or not at all.
            stored = [i for i in unit if i in counts]
            assert len(stored) in (0, len(unit)), (
                f"{kind} of ids {unit[0]}..{unit[-1]}, unacknowledged at the kill, is partly "
                f"stored: {len(stored)} of {len(unit)} rows (ids {stored[:3]}...{stored[-3:]})"
            )
        for view in views:
            wait_view_count(conn, view, n)
            got = Counter(r[0] for r in conn.execute(f"SELECT id FROM {view}").fetchall())
            assert got == counts, (
                f"view {view}: {sum((got - counts).values())} extra, "
                f"{sum((counts - got).values())} missing"
            )
        # The updating view counts each row once (once it has caught up).
        expected = dict(Counter(f"k{i % 5}" for i in counts))
        deadline = time.monotonic() + 30.0
        while True:
            per_key = dict(conn.execute("SELECT k, n FROM events_per_key").fetchall())
            if per_key == expected or time.monotonic() > deadline:
                break
            assert all(per_key.get(k, 0) <= c for k, c in expected.items()), (per_key, expected)
            time.sleep(0.1)
        assert per_key == expected, ("events_per_key", per_key, expected)
        return counts


@pytest.mark.timeout(45)
def test_acknowledged_inserts_survive_sigkill(make_server, crash_seed):
    rng = random.Random(crash_seed)
    with with_seed(crash_seed):
        s = make_server(["--checkpoint-interval", "500ms"])
        with connect(s) as conn:
            conn.execute("CREATE TABLE events (id BIGINT NOT NULL, k VARCHAR, ts TIMESTAMP(3))")
            conn.execute("CREATE MATERIALIZED VIEW events_all AS SELECT id, k, ts FROM events")
            conn.execute(
                "CREATE MATERIALIZED VIEW events_per_key AS "
                "SELECT k, count(*) AS n FROM events GROUP BY k"
            )

        # 1. One statement at a time, and the kill right after the n-th acknowledgement.
        acked: list[list[int]] = []
        stop_after = rng.randint(30, 120)
        with connect(s) as conn:
            for i in range(stop_after):
                conn.execute("INSERT INTO events VALUES (%s, %s, %s)", row(i))
                acked.append([i])
                if i == stop_after // 2:
                    # Let a checkpoint of the views happen midway.
                    time.sleep(0.7)
            s.kill()
        start(s)
        check_acknowledged(s, acked, [], ["events_all"])
        with connect(s) as conn:
            restored = jobs(conn)
        assert restored["events_all"]["restored_from"] is not None, restored["events_all"]

        # 2. Three clients at once (single-row INSERTs; transactions, COPYs and multi-row
        # INSERTs), killed at a random moment: the units in flight may be there, entirely, or
        # not at all.
        inserters = [
            Inserter(s, 100_000, "insert"),
            Inserter(s, 200_000, "insert"),
            Inserter(s, 300_000, "mixed"),
        ]
        for t in inserters:
            t.start()
        time.sleep(rng.uniform(0.5, 1.5))
        s.kill()
        for t in inserters:
            t.join(timeout=10)
            assert not t.is_alive(), "an inserting client hung after the kill"
            assert t.error is None, repr(t.error)
        got_acked = sum(len(t.acked) for t in inserters)
        print("acknowledged units in the concurrent phase:", got_acked)
        assert got_acked > 0, "no INSERT was acknowledged before the kill"
        for t in inserters:
            acked.extend(t.acked)
        maybe = [t.in_flight for t in inserters if t.in_flight]
        start(s)
        check_acknowledged(s, acked, maybe, ["events_all"])

        # 3. A transaction of many statements, killed while its COMMIT runs (the server
        # appends what the transaction holds at COMMIT): all of it or none.
        statements, per_statement = 30, 4
        ids = list(range(400_000, 400_000 + statements * per_statement))
        values = ", ".join(["(%s, %s, %s)"] * per_statement)
        conn = psycopg.connect(s.dsn)  # not autocommit: BEGIN ... COMMIT
        try:
            for j in range(statements):
                chunk = ids[j * per_statement : (j + 1) * per_statement]
                conn.execute(
                    f"INSERT INTO events VALUES {values}", [v for i in chunk for v in row(i)]
                )
            delay = rng.uniform(0.002, 0.08)
            killer = threading.Timer(delay, s.kill)
            killer.start()
            try:
                conn.commit()
                acked.append(ids)  # acknowledged before the kill
            except psycopg.Error:
                maybe.append(("transaction", ids))
            killer.join(timeout=10)
        finally:
            conn.close()
        print(f"COMMIT killed after {delay * 1000:.0f} ms")
        start(s)
        counts = check_acknowledged(s, acked, maybe, ["events_all"])

        # A view created now reads the table from its first row: the same rows.
        with connect(s) as conn:
            conn.execute("CREATE MATERIALIZED VIEW events_fresh AS SELECT id FROM events")
        again = check_acknowledged(s, acked, maybe, ["events_fresh"])
        assert again == counts

