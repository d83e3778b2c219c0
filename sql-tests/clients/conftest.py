"""Shared fixtures for the client tests: one real `eddy` server per pytest session.

The server binary comes from `EDDY_BIN`, else `$CARGO_TARGET_DIR/debug/eddy`, else
`~/.cache/eddy-target/debug/eddy`. It listens on 127.0.0.1 on a free port with a temporary
data directory, and is killed when the session ends (also when tests fail or pytest is
interrupted). Its log is printed when a test fails. Files it may write besides its data
directory go to `server.out_dir`, which it is given as `--allow-path` (COPY TO a file, sinks).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0


def eddy_binary() -> Path:
    explicit = os.environ.get("EDDY_BIN")
    if explicit:
        return Path(explicit)
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        return Path(target) / "debug" / "eddy"
    return Path.home() / ".cache" / "eddy-target" / "debug" / "eddy"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class EddyServer:
    """A running eddy process and how to reach it."""

    def __init__(
        self,
        binary: Path,
        extra_args: list[str] | tuple[str, ...] = (),
        listen_host: str = HOST,
        env: dict[str, str] | None = None,
    ):
        self.binary = binary
        # More flags for every start (e.g. `["--checkpoint-interval", "500ms"]`).
        self.extra_args = list(extra_args)
        # The address given to --listen (e.g. 0.0.0.0); clients always connect to 127.0.0.1.
        self.listen_host = listen_host
        # More environment variables for the server (e.g. EDDY_PASSWORD).
        self.env = dict(env or {})
        self.host = HOST
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="eddy-clients-"))
        self.data_dir = self.tmp / "data"
        # Outside the data directory: the server may write here only through --allow-path.
        self.out_dir = self.tmp / "out"
        self.out_dir.mkdir()
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    # Connection strings for each client.
    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user=eddy dbname=eddy connect_timeout=10"

    @property
    def url(self) -> str:
        return f"postgresql://eddy@{self.host}:{self.port}/eddy"

    def start(self) -> None:
        if not self.binary.is_file():
            raise RuntimeError(
                f"eddy binary not found at {self.binary}: build it (cargo build --workspace) "
                "or set EDDY_BIN"
            )
        log = open(self.log_path, "ab")  # appended: a restarted server keeps the first log
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env["NO_COLOR"] = "1"
        env.update(self.env)
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "--listen",
                f"{self.listen_host}:{self.port}",
                "--data-dir",
                str(self.data_dir),
                "--allow-path",
                str(self.out_dir),
                *self.extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own process group: a Ctrl-C aimed at a psql child never reaches it.
            start_new_session=True,
        )
        log.close()
        self._write_pidfile()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"eddy exited with {self.proc.returncode} at startup:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"eddy did not listen on {self.port} within {STARTUP_TIMEOUT}s")

    def _pidfile(self) -> Path | None:
        # .ci/run sets EDDY_TEST_PIDDIR so that its exit trap can kill a server this session
        # could not stop (e.g. pytest itself killed).
        piddir = os.environ.get("EDDY_TEST_PIDDIR")
        if not piddir or self.proc is None:
            return None
        return Path(piddir) / f"eddy-{self.proc.pid}.pid"

    def _write_pidfile(self) -> None:
        pidfile = self._pidfile()
        if pidfile is not None:
            pidfile.write_text(f"{self.proc.pid}\n")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(lines[-n:])

    def terminate(self) -> bool:
        """Stops the process with SIGTERM (SIGKILL after 10 s) and keeps the data directory,
        so that `start()` runs a new server on the same data and port. True when the process
        exited on SIGTERM by itself."""
        pidfile = self._pidfile()
        proc, self.proc = self.proc, None
        exited = True
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exited = False
                proc.kill()
                proc.wait(timeout=10)
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)
        return exited

    def kill(self) -> None:
        """Kills the process with SIGKILL (a crash: no clean shutdown) and keeps the data
        directory, so that `start()` runs a new server on the same data and port."""
        pidfile = self._pidfile()
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        self.terminate()
        shutil.rmtree(self.tmp, ignore_errors=True)


_servers: list[EddyServer] = []


@atexit.register
def _kill_leftover_servers() -> None:
    for s in _servers:
        s.stop()


@pytest.fixture(scope="session")
def server():
    s = EddyServer(eddy_binary())
    _servers.append(s)
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def own_server():
    """A server of the test's own, on a fresh data directory, for tests that restart it
    (`own_server.terminate()` then `own_server.start()`); stopped and deleted at the end."""
    s = EddyServer(eddy_binary())
    _servers.append(s)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        _servers.remove(s)


@pytest.fixture
def start_server():
    """Starts servers of the test's own with more flags (security options, limits):
    `start_server("--password", "pw")`, `start_server(listen_host="0.0.0.0")`,
    `start_server(env={"EDDY_PASSWORD": "pw"})`. All are stopped and deleted at the end."""
    started: list[EddyServer] = []

    def start(*args: str, listen_host: str = HOST, env: dict[str, str] | None = None):
        s = EddyServer(eddy_binary(), args, listen_host=listen_host, env=env)
        _servers.append(s)
        started.append(s)
        s.start()
        return s

    try:
        yield start
    finally:
        for s in started:
            s.stop()
            _servers.remove(s)


@pytest.fixture(autouse=True)
def _server_survives(request, server):
    """Every test ends with the server process still running."""
    yield
    if not server.alive():
        pytest.fail(f"the eddy server died during this test. Log tail:\n{server.log_tail()}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call" and report.failed:
        for s in _servers:
            if s.proc is not None:
                report.sections.append(("eddy server log (tail)", s.log_tail(40)))
    return report


@pytest.fixture
def name():
    """A unique table name for this test: `name("clicks")` -> `clicks_1a2b3c4d`."""

    def make(prefix: str = "t") -> str:
        return f"{prefix}_{uuid.uuid4().hex[:8]}"

    return make


def server_bug(reason: str):
    """Mark a test that fails because of a known Eddy server bug.

    It is an xfail(strict=True): the suite stays green while the bug is open, and the test
    turns into a failure (XPASS) the moment the bug is fixed, so the mark gets removed.
    `EDDY_STRICT_BUGS=1` ignores these marks and shows the real failures.
    """
    if os.environ.get("EDDY_STRICT_BUGS") == "1":
        return pytest.mark.server_bug
    return pytest.mark.xfail(strict=True, reason=f"SERVER BUG: {reason}")


def not_supported_yet(reason: str):
    """Like server_bug, for a client feature Eddy does not implement yet (documented gaps)."""
    if os.environ.get("EDDY_STRICT_BUGS") == "1":
        return pytest.mark.server_bug
    return pytest.mark.xfail(strict=True, reason=f"NOT SUPPORTED YET: {reason}")


TABLE_COLUMNS = "a BIGINT, ts TIMESTAMP(3), s VARCHAR, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND"


def psql_env() -> dict[str, str]:
    """The environment for a psql child: no user PG* settings, bounded connect time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    env["PAGER"] = "cat"
    env["LC_ALL"] = "C"
    return env
