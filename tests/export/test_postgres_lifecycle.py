"""The PostgreSQL server of the export tests stops when the pytest session that started it ends.

Each test runs a pytest session in a subprocess with the export tests' fixtures (``tests/export/conftest.py``),
on a server of its own (``QUAMOTION_PG_DIR`` / ``QUAMOTION_PG_PORT``: never the shared test server),
and looks at the server after the session.
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
from tests.export.conftest import POSTGRES_SH

pytestmark = pytest.mark.postgres

PROBE = """
import psycopg2

def test_uses_the_server(postgres_uri):
    with psycopg2.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)

def test_fails(postgres_uri):
    raise AssertionError("a failing test: the server must stop anyway")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def own_server() -> Iterator[dict[str, str]]:
    """The environment of a PostgreSQL server of this test's own (stopped and removed afterwards)."""
    folder = tempfile.mkdtemp(prefix="qm-pg-", dir="/tmp")  # short: the socket lives there
    env = {**os.environ, "QUAMOTION_PG_DIR": folder, "QUAMOTION_PG_PORT": str(free_port())}
    try:
        yield env
    finally:
        subprocess.run(
            ["bash", str(POSTGRES_SH), "stop"], env=env, capture_output=True, timeout=120, check=False
        )
        shutil.rmtree(folder, ignore_errors=True)


def status(env: dict[str, str]) -> int:
    return subprocess.run(
        ["bash", str(POSTGRES_SH), "status"], env=env, capture_output=True, timeout=60, check=False
    ).returncode


def accepts_connections(env: dict[str, str]) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", int(env["QUAMOTION_PG_PORT"]))) == 0


def run_session(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
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
        ["bash", str(POSTGRES_SH), "start"],
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
