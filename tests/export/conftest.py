"""Fixtures of the export tests: a real PostgreSQL server, and an Airflow home for ``airflow dags test``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from tests.dag_runs import EXPORT_DAGS, REPO, AirflowHome, make_airflow_home

POSTGRES_SH = REPO / "scripts" / "postgres.sh"


def postgres_sh(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``scripts/postgres.sh COMMAND`` (its settings from this process's environment)."""
    try:
        return subprocess.run(
            ["bash", str(POSTGRES_SH), command], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scripts/postgres.sh {command} did not finish within {timeout:.0f} s")


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A PostgreSQL server on loopback, started by ``scripts/postgres.sh`` (Debian's packages).

    Never skipped: when the server cannot start, the tests that need it fail (under CI=true and
    elsewhere), with the script's message. A server this session started is stopped when the
    session ends, whatever its outcome (``make test`` leaves nothing running); one that was already
    running (a developer's, another session's) is left running.
    """
    started_here = postgres_sh("status").returncode != 0
    out = postgres_sh("start")
    if out.returncode != 0:
        pytest.fail(
            f"PostgreSQL is unavailable (scripts/postgres.sh start exited {out.returncode}; CI={os.environ.get('CI')}):\n"
            f"{out.stderr.strip()}"
        )
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        if started_here:
            stopped = postgres_sh("stop")
            if stopped.returncode != 0:
                pytest.fail(
                    f"scripts/postgres.sh stop exited {stopped.returncode}:\n{stopped.stderr.strip()}"
                )


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
