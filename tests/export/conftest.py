"""Fixtures of the export tests: a real PostgreSQL server, and an Airflow home for ``airflow dags test``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """A PostgreSQL server on loopback, started by ``scripts/postgres.sh`` (Debian's packages).

    Never skipped: when the server cannot start, the tests that need it fail (under CI=true and
    elsewhere), with the script's message.
    """
    try:
        out = subprocess.run(
            ["bash", str(REPO / "scripts" / "postgres.sh"), "start"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/postgres.sh start did not finish within 120 s")
    if out.returncode != 0:
        pytest.fail(
            f"PostgreSQL is unavailable (scripts/postgres.sh start exited {out.returncode}; CI={os.environ.get('CI')}):\n"
            f"{out.stderr.strip()}"
        )
    return out.stdout.strip().splitlines()[-1]


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
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An Airflow home with a migrated SQLite metadata DB; returns the environment to run ``airflow`` in."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "tests" / "export" / "dags"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(REPO),
        }
    )
    out = subprocess.run(
        [AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return env
