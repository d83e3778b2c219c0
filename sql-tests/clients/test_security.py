"""Security and limits, as a user of psql, psycopg and asyncpg sees them.

Each test starts servers of its own with the flags it needs (`start_server` in conftest.py):
SCRAM-SHA-256 with `--password` (or `EDDY_PASSWORD`), TLS with a certificate made here with
the `openssl` CLI (a test CA and a server certificate for `localhost` and 127.0.0.1), `--tls-
required`, `--max-connections`, and the rule that a server without a password listens on
loopback only. Every client connects to 127.0.0.1; the non-loopback cases only bind.

SQLSTATEs of connection errors come from asyncpg (libpq reports connection errors without
one); psycopg and psql show the messages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest

from conftest import eddy_binary, free_port, psql_env

PASSWORD = "correct horse battery staple"
PSQL = shutil.which("psql") or "/usr/bin/psql"


# --- helpers ------------------------------------------------------------------------------


def connect(server, **params) -> psycopg.Connection:
    return psycopg.connect(server.dsn, autocommit=True, **params)


def select_one(conn) -> int:
    return conn.execute("SELECT 1").fetchone()[0]


def connect_error(server, **params) -> str:
    """The message of a psycopg connection that fails."""
    with pytest.raises(psycopg.OperationalError) as failure:
        connect(server, **params).close()
    return str(failure.value)


async def _asyncpg_sqlstate(server, **params) -> str:
    try:
        conn = await asyncpg.connect(
            host=server.host, port=server.port, database="eddy", timeout=10, **params
        )
    except asyncpg.PostgresError as e:
        return f"{e.sqlstate} {e}"
    await conn.close()
    return "connected"


def asyncpg_outcome(server, **params) -> str:
    """`SQLSTATE message` of an asyncpg connection that fails, or `connected`."""
    params.setdefault("user", "eddy")
    params.setdefault("ssl", False)
    return asyncio.run(_asyncpg_sqlstate(server, **params))


def psql(server, *args: str, password: str | None = None, sslmode: str | None = None):
    env = psql_env()
    if password is not None:
        env["PGPASSWORD"] = password
    if sslmode is not None:
        env["PGSSLMODE"] = sslmode
    return subprocess.run(
        [PSQL, "-X", "-h", server.host, "-p", str(server.port), "-U", "eddy", *args, "eddy"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
        cwd=directory,
    )
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def certs():
    """A test CA, a server certificate it signed for localhost and 127.0.0.1, and a second CA
    that signed nothing."""
    directory = Path(tempfile.mkdtemp(prefix="eddy-tls-"))
    try:
        ca_crt, ca_key = make_ca(directory, "eddy-test-ca")
        other_ca, _ = make_ca(directory, "other-ca")
        openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost",
            cwd=directory,
        )
        (directory / "ext.cnf").write_text(
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n"
            "basicConstraints = CA:FALSE\n"
            "keyUsage = digitalSignature, keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
        )
        openssl(
            "x509", "-req", "-in", "server.csr", "-CA", str(ca_crt), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
            cwd=directory,
        )
        yield {
            "ca": ca_crt,
            "other_ca": other_ca,
            "cert": directory / "server.crt",
            "key": directory / "server.key",
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def tls_flags(certs) -> list[str]:
    return ["--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])]


# --- SCRAM-SHA-256 ------------------------------------------------------------------------


def test_right_password_authenticates_with_scram(start_server):
    server = start_server("--password", PASSWORD)
    # require_auth makes libpq (>= 16) fail unless the server asked for SCRAM-SHA-256.
    with connect(server, password=PASSWORD, require_auth="scram-sha-256") as conn:
        assert select_one(conn) == 1
        assert conn.info.parameter_status("session_authorization") == "eddy"
    assert asyncpg_outcome(server, password=PASSWORD) == "connected"
    out = psql(server, "-c", "SELECT 41 + 1 AS answer", password=PASSWORD, sslmode="disable")
    assert out.returncode == 0, out.stderr
    assert "42" in out.stdout


def test_password_from_the_environment(start_server):
    server = start_server(env={"EDDY_PASSWORD": PASSWORD})
    with connect(server, password=PASSWORD, require_auth="scram-sha-256") as conn:
        assert select_one(conn) == 1
    assert "28P01" in asyncpg_outcome(server, password="wrong")
    # The password never shows in the server's log.
    assert PASSWORD not in server.log_tail(1000)


def test_wrong_password_is_refused_with_28p01(start_server):
    server = start_server("--password", PASSWORD)
    message = connect_error(server, password="not the password")
    assert 'password authentication failed for user "eddy"' in message, message
    outcome = asyncpg_outcome(server, password="not the password")
    assert outcome == '28P01 password authentication failed for user "eddy"', outcome
    out = psql(server, "-c", "SELECT 1", password="nope", sslmode="disable")
    assert out.returncode != 0
    assert 'password authentication failed for user "eddy"' in out.stderr, out.stderr


def test_missing_password_is_refused(start_server):
    server = start_server("--password", PASSWORD)
    # asyncpg answers the SCRAM challenge with an empty password: the server refuses it.
    outcome = asyncpg_outcome(server)
    assert outcome.startswith("28P01 "), outcome
    # libpq does not even try without a password once the server asks for one.
    message = connect_error(server)
    assert "no password supplied" in message, message
    out = psql(server, "-w", "-c", "SELECT 1", sslmode="disable")
    assert out.returncode != 0
    assert "no password supplied" in out.stderr, out.stderr


def test_other_users_are_refused_with_28p01(start_server):
    server = start_server("--password", PASSWORD)
    outcome = asyncpg_outcome(server, user="alice", password=PASSWORD)
    assert outcome == '28P01 password authentication failed for user "alice"', outcome
    with pytest.raises(psycopg.OperationalError) as failure:
        psycopg.connect(
            f"host={server.host} port={server.port} dbname=eddy user=postgres connect_timeout=10",
            password=PASSWORD,
        )
    assert 'password authentication failed for user "postgres"' in str(failure.value)


def test_md5_and_cleartext_are_not_offered(start_server):
    server = start_server("--password", PASSWORD)
    for method in ("md5", "password"):
        message = connect_error(server, password=PASSWORD, require_auth=method)
        assert "SASL" in message, message


def test_without_password_loopback_clients_need_none(start_server):
    server = start_server()
    with connect(server, require_auth="none") as conn:
        assert select_one(conn) == 1


# --- TLS ------------------------------------------------------------------------------------


def test_tls_verify_full_and_require(start_server, certs):
    server = start_server("--password", PASSWORD, *tls_flags(certs))
    # The certificate is checked against the test CA and the host name (IP SAN 127.0.0.1).
    with connect(
        server, password=PASSWORD, sslmode="verify-full", sslrootcert=str(certs["ca"])
    ) as conn:
        assert conn.pgconn.ssl_in_use
        assert select_one(conn) == 1
    # ... and the DNS SAN localhost.
    with psycopg.connect(
        f"host=localhost hostaddr=127.0.0.1 port={server.port} user=eddy dbname=eddy",
        password=PASSWORD,
        sslmode="verify-full",
        sslrootcert=str(certs["ca"]),
    ) as conn:
        assert conn.pgconn.ssl_in_use
    with connect(server, password=PASSWORD, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert select_one(conn) == 1
    # A certificate from another CA is not trusted.
    message = connect_error(
        server, password=PASSWORD, sslmode="verify-full", sslrootcert=str(certs["other_ca"])
    )
    assert "certificate verify failed" in message, message
    # Without --tls-required, plaintext still works.
    with connect(server, password=PASSWORD, sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert select_one(conn) == 1
    # asyncpg over TLS.
    assert asyncpg_outcome(server, password=PASSWORD, ssl="require") == "connected"


def test_scram_over_tls_with_and_without_channel_binding(start_server, certs):
    server = start_server("--password", PASSWORD, *tls_flags(certs))
    # SCRAM-SHA-256-PLUS (tls-server-end-point) is offered over TLS.
    with connect(
        server, password=PASSWORD, sslmode="require", channel_binding="require"
    ) as conn:
        assert select_one(conn) == 1
    with connect(server, password=PASSWORD, sslmode="require", channel_binding="disable") as conn:
        assert select_one(conn) == 1
    message = connect_error(server, password="wrong", sslmode="require")
    assert 'password authentication failed for user "eddy"' in message, message
    # Never over plaintext (libpq would refuse a server offering it there).
    message = connect_error(server, password=PASSWORD, sslmode="disable", channel_binding="require")
    assert "channel binding" in message, message


def test_psql_conninfo_shows_the_ssl_connection(start_server, certs):
    server = start_server("--password", PASSWORD, *tls_flags(certs))
    out = subprocess.run(
        [
            PSQL,
            "-X",
            "-c",
            "\\conninfo",
            f"host=localhost hostaddr=127.0.0.1 port={server.port} user=eddy dbname=eddy "
            f"sslmode=verify-full sslrootcert={certs['ca']}",
        ],
        capture_output=True,
        text=True,
        env={**psql_env(), "PGPASSWORD": PASSWORD},
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "SSL connection (protocol: TLSv1." in out.stdout, out.stdout


def test_tls_required_refuses_plaintext(start_server, certs):
    server = start_server("--password", PASSWORD, *tls_flags(certs), "--tls-required")
    message = connect_error(server, password=PASSWORD, sslmode="disable")
    assert "SSL required" in message, message
    outcome = asyncpg_outcome(server, password=PASSWORD, ssl=False)
    assert outcome.startswith("28000 SSL required"), outcome
    out = psql(server, "-c", "SELECT 1", password=PASSWORD, sslmode="disable")
    assert out.returncode != 0
    assert "SSL required" in out.stderr, out.stderr
    # libpq's default (prefer) and require go over TLS and get in.
    with connect(server, password=PASSWORD) as conn:
        assert conn.pgconn.ssl_in_use
    out = psql(server, "-c", "SELECT 1", password=PASSWORD, sslmode="require")
    assert out.returncode == 0, out.stderr


def test_bad_tls_files_stop_the_server_from_starting(certs, tmp_path):
    missing = tmp_path / "missing.pem"
    for flags, expected in [
        (["--tls-cert", str(missing), "--tls-key", str(certs["key"])], "--tls-cert"),
        (["--tls-cert", str(certs["cert"]), "--tls-key", str(certs["cert"])], "--tls-key"),
        (["--tls-required"], "--tls-cert"),
    ]:
        out = run_to_exit(flags, tmp_path)
        assert out.returncode != 0, flags
        assert expected in out.stderr, out.stderr


# --- listening beyond loopback ---------------------------------------------------------------


def run_to_exit(flags: list[str], tmp_path: Path, listen: str = "127.0.0.1", env=None):
    """Runs eddy expecting it to refuse to start (killed after 30 s if it does start)."""
    return subprocess.run(
        [
            str(eddy_binary()),
            "--listen",
            f"{listen}:{free_port()}",
            "--data-dir",
            str(tmp_path / "data"),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )


def test_non_loopback_listen_needs_a_password(start_server, tmp_path):
    out = run_to_exit([], tmp_path, listen="0.0.0.0")
    assert out.returncode != 0
    assert "--password" in out.stderr, out.stderr
    assert "0.0.0.0" in out.stderr, out.stderr
    # --auth trust overrides the rule (clients connect through loopback here).
    server = start_server("--auth", "trust", listen_host="0.0.0.0")
    with connect(server) as conn:
        assert select_one(conn) == 1
    # So does a password.
    server = start_server(listen_host="0.0.0.0", env={"EDDY_PASSWORD": PASSWORD})
    with connect(server, password=PASSWORD) as conn:
        assert select_one(conn) == 1


def test_contradictory_auth_options_refuse_to_start(tmp_path):
    out = run_to_exit(["--auth", "trust", "--password", PASSWORD], tmp_path)
    assert out.returncode != 0 and "--auth trust" in out.stderr, out.stderr
    out = run_to_exit(["--auth", "scram-sha-256"], tmp_path)
    assert out.returncode != 0 and "--password" in out.stderr, out.stderr
    out = run_to_exit(["--auth", "md5"], tmp_path)
    assert out.returncode != 0 and "md5" in out.stderr, out.stderr


# --- connection limit -------------------------------------------------------------------------


def connect_eventually(server, timeout: float = 10.0, **params) -> psycopg.Connection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(server, **params)
        except psycopg.OperationalError as e:
            if "too many clients" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_max_connections(start_server):
    server = start_server("--max-connections", "3")
    conns = [connect(server) for _ in range(3)]
    try:
        for conn in conns:
            assert select_one(conn) == 1
        message = connect_error(server)
        assert "sorry, too many clients already" in message, message
        outcome = asyncpg_outcome(server)
        assert outcome == "53300 sorry, too many clients already", outcome
        # The connections already in are unaffected.
        assert all(select_one(conn) == 1 for conn in conns)
        # Closing one frees its slot for the next client.
        conns.pop().close()
        conns.append(connect_eventually(server))
        assert select_one(conns[-1]) == 1
        assert "too many clients" in connect_error(server)
    finally:
        for conn in conns:
            conn.close()


def raw_refusal(server) -> list[tuple[bytes, bytes]]:
    """Sends a plaintext startup message and reads every message until the server closes."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        body = struct.pack("!I", 196608) + b"user\0eddy\0database\0eddy\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    messages = []
    while data:
        kind, length = data[:1], struct.unpack("!I", data[1:5])[0]
        messages.append((kind, data[5 : 1 + length]))
        data = data[1 + length :]
    return messages


def test_a_refused_client_gets_one_fatal_error_and_the_connection_closes(start_server):
    """As from Postgres: ErrorResponse, then end of stream (no ReadyForQuery, which asyncpg
    would report as a protocol violation)."""
    server = start_server("--max-connections", "1")
    with connect(server):
        messages = raw_refusal(server)
    assert [kind for kind, _ in messages] == [b"E"], messages
    fields = messages[0][1]
    assert b"SFATAL\0" in fields and b"C53300\0" in fields, fields


def test_default_connection_limit_is_100(start_server):
    server = start_server()
    conns = []
    try:
        for _ in range(100):
            conns.append(connect(server))
        assert "sorry, too many clients already" in connect_error(server)
    finally:
        for conn in conns:
            conn.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_client_killed_mid_query_frees_its_slot(start_server, certs, tls):
    server = start_server("--max-connections", "2", *(tls_flags(certs) if tls else []))
    sslmode = "require" if tls else "disable"
    with connect(server, sslmode=sslmode) as setup:
        setup.execute(
            "CREATE TABLE waiting (a BIGINT, ts TIMESTAMP(3), "
            "WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)"
        )
    code = (
        "import psycopg\n"
        f"conn = psycopg.connect({server.dsn!r}, autocommit=True, sslmode={sslmode!r})\n"
        f"assert conn.pgconn.ssl_in_use is {tls}\n"
        "print('started', flush=True)\n"
        "conn.execute('SELECT a FROM waiting').fetchall()\n"  # unbounded: never returns
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    other = None
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(1)
        assert proc.poll() is None, proc.stderr.read()
        other = connect_eventually(server)
        # Both slots are taken: the query's and this one.
        assert "too many clients" in connect_error(server)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        # The server notices the vanished client (within about a second), stops its query
        # and frees the slot.
        late = connect_eventually(server, timeout=15)
        assert select_one(late) == 1
        late.close()
        assert select_one(other) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if other is not None:
            other.close()
