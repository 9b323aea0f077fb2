"""The database servers of the export tests (PostgreSQL, MariaDB) stop when the pytest session that
started them ends, also when a test fails.

Each test runs a pytest session in a subprocess with the export tests' fixtures (``tests/export/conftest.py``),
on a server of its own (``QUAMOTION_PG_DIR`` / ``QUAMOTION_PG_PORT``, ``QUAMOTION_MARIADB_DIR`` /
``QUAMOTION_MARIADB_PORT``: never the shared test server), and looks at the server after the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dag_runs import REPO
from tests.export.conftest import MARIADB_SH, POSTGRES_SH

pytestmark = pytest.mark.postgres

#: server -> (script, its folder and port variables, the session fixture)
SERVERS = {
    "postgres": (POSTGRES_SH, "QUAMOTION_PG_DIR", "QUAMOTION_PG_PORT", "postgres_uri"),
    "mariadb": (MARIADB_SH, "QUAMOTION_MARIADB_DIR", "QUAMOTION_MARIADB_PORT", "mariadb_uri"),
}

PROBE = """
import socket
from urllib.parse import urlsplit

def test_uses_the_server(FIXTURE):
    uri = urlsplit(FIXTURE)
    with socket.create_connection((uri.hostname, uri.port), timeout=10):
        pass  # the server accepts connections (raises otherwise)

def test_fails(FIXTURE):
    raise AssertionError("a failing test: the server must stop anyway")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(params=sorted(SERVERS))
def own_server(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The environment of a server of this test's own (stopped and removed afterwards)."""
    script, dir_var, port_var, fixture = SERVERS[request.param]
    folder = tempfile.mkdtemp(prefix="qm-db-", dir="/tmp")  # short: the socket lives there
    env = {**os.environ, dir_var: folder, port_var: str(free_port())}
    env.update(QM_SCRIPT=str(script), QM_PORT_VAR=port_var, QM_FIXTURE=fixture)
    try:
        yield env
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def status(env: dict[str, str]) -> int:
    return subprocess.run(
        ["bash", env["QM_SCRIPT"], "status"], env=env, capture_output=True, timeout=60, check=False
    ).returncode


def accepts_connections(env: dict[str, str]) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", int(env[env["QM_PORT_VAR"]]))) == 0


def run_session(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE.replace("FIXTURE", env["QM_FIXTURE"]))
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.export.conftest",
            "--rootdir",
            str(tmp_path),
            str(probe),
        ],
        env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_server_the_session_started_is_stopped_also_on_failure(
    own_server: dict[str, str], tmp_path: Path
) -> None:
    assert status(own_server) != 0
    out = run_session(own_server, tmp_path)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:]
    assert status(own_server) != 0, "the session's PostgreSQL is still running"
    assert not accepts_connections(own_server)


def test_a_server_that_was_running_is_left_running(own_server: dict[str, str], tmp_path: Path) -> None:
    started = subprocess.run(
        ["bash", own_server["QM_SCRIPT"], "start"],
        env=own_server,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    out = run_session(own_server, tmp_path)
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert status(own_server) == 0
    assert accepts_connections(own_server)
