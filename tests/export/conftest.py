"""Fixtures of the export tests: a real PostgreSQL server, and an Airflow home for ``airflow dags test``."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dag_runs import EXPORT_DAGS, REPO, AirflowHome, make_airflow_home

POSTGRES_SH = REPO / "scripts" / "postgres.sh"
MARIADB_SH = REPO / "scripts" / "mariadb.sh"


def server_sh(script: Path, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``scripts/SERVER.sh COMMAND`` (its settings from this process's environment)."""
    try:
        return subprocess.run(
            ["bash", str(script), command], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script.name} {command} did not finish within {timeout:.0f} s")


def postgres_sh(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``scripts/postgres.sh COMMAND`` (its settings from this process's environment)."""
    return server_sh(POSTGRES_SH, command, timeout)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie no init has reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


@contextlib.contextmanager
def local_server(script: Path, name: str) -> Iterator[str]:
    """A database server on loopback, started by ``script`` (Debian's packages); yields its URI.

    Never skipped: when the server cannot start, the tests that need it fail (under CI=true and
    elsewhere), with the script's message. A server this session started is stopped when the
    session ends, whatever its outcome (``make test`` leaves nothing running), and its process
    must then be gone; one that was already running (a developer's, another session's) is left
    running.
    """
    started_here = server_sh(script, "status").returncode != 0
    out = server_sh(script, "start")
    if out.returncode != 0:
        pytest.fail(
            f"{name} is unavailable ({script.name} start exited {out.returncode}; CI={os.environ.get('CI')}):\n"
            f"{out.stderr.strip()}"
        )
    pid = int(server_sh(script, "pid").stdout.strip() or 0)
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        if started_here:
            stopped = server_sh(script, "stop")
            if stopped.returncode != 0:
                pytest.fail(f"{script.name} stop exited {stopped.returncode}:\n{stopped.stderr.strip()}")
            if pid and pid_alive(pid):
                pytest.fail(f"{name} (pid {pid}) is still running after {script.name} stop")


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A PostgreSQL server on loopback, started by ``scripts/postgres.sh`` (see :func:`local_server`)."""
    with local_server(POSTGRES_SH, "PostgreSQL") as uri:
        yield uri


@pytest.fixture(scope="session")
def mariadb_uri() -> Iterator[str]:
    """A MariaDB server on loopback, started by ``scripts/mariadb.sh`` (see :func:`local_server`)."""
    with local_server(MARIADB_SH, "MariaDB") as uri:
        yield uri


@pytest.fixture
def pg_database(postgres_uri: str) -> Iterator[str]:
    """A fresh database on the test server for one test; its URI."""
    import uuid

    import psycopg2

    name = f"qm_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(postgres_uri)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = postgres_uri.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """An Airflow home (the shared harness, :mod:`tests.dag_runs`) reading tests/export/dags."""
    return make_airflow_home(
        tmp_path_factory.mktemp("airflow-home"), EXPORT_DAGS, {"AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"}
    )
