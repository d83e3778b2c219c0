"""node-postgres (pg) and pg-cursor against a real eddy server, driven from pytest.

The script is node/eddy_node_test.js; its packages come from node/package-lock.json, which
.ci/run installs with `npm ci` into ${EDDY_NODE_MODULES:-~/.cache/eddy-node}/node_modules.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

NODE = shutil.which("node")
HERE = Path(__file__).parent
MODULES = Path(os.environ.get("EDDY_NODE_MODULES", Path.home() / ".cache" / "eddy-node")) / "node_modules"

pytestmark = pytest.mark.skipif(
    NODE is None or not (MODULES / "pg-cursor").is_dir(),
    reason="node or the npm packages are missing (.ci/run installs them)",
)


def test_node_postgres_and_pg_cursor(server, name):
    out = subprocess.run(
        [NODE, str(HERE / "node" / "eddy_node_test.js"), server.host, str(server.port), name("node")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NODE_PATH": str(MODULES)},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all checks passed" in out.stdout
