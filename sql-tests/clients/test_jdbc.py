"""pgJDBC against a real eddy server: DatabaseMetaData, prepared statements and a server-side
cursor, driven from pytest. The driver is Debian's libpostgresql-jdbc-java, which .ci/run
installs; jdbc/EddyJdbcTest.java is compiled into a temporary directory at each run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent
DRIVER = Path("/usr/share/java/postgresql.jar")
JAVA = shutil.which("java")
JAVAC = shutil.which("javac")

pytestmark = pytest.mark.skipif(
    not (DRIVER.exists() and JAVA and JAVAC),
    reason="java, javac or the pgJDBC driver is missing (.ci/run installs them)",
)


def test_jdbc_metadata_prepared_statement_and_cursor(server, name, tmp_path):
    compiled = subprocess.run(
        [JAVAC, "-d", str(tmp_path), str(HERE / "jdbc" / "EddyJdbcTest.java")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    out = subprocess.run(
        [
            JAVA,
            "-cp",
            f"{tmp_path}:{DRIVER}",
            "EddyJdbcTest",
            server.host,
            str(server.port),
            name("jdbc"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout
