"""Concurrent loads into one table: the real PostgreSQL server (``scripts/postgres.sh``) and SQLite.

Ten first loads at once (a backfill's runs in parallel) used to collide on PostgreSQL's ``CREATE TABLE
IF NOT EXISTS`` (``UniqueViolation`` on ``pg_type_typname_nsp_index``): each load here keeps its
transaction open a moment after the DDL, so every other load's DDL overlaps it. On SQLite, loads into
an existing table used to fail with "database is locked" (a deferred transaction that read first
cannot wait for the write lock).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.export.columns import Columns
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.sql import load_table
from airflow_provider_quamotion.export.window import Window

UTC = dt.timezone.utc
LOADS = 10


def day(i: int) -> dt.datetime:
    return dt.datetime(2024, 1, 1, tzinfo=UTC) + dt.timedelta(days=i)


def slow_rows(i: int, pause: float, started: threading.Event | None = None) -> Iterator[Row]:
    """Two rows of day ``i``; the second after ``pause`` seconds (the transaction stays open)."""
    yield Row({"testRunId": f"r{i}-a", "scheduled": day(i).isoformat()}, day(i))
    if started is not None:
        started.set()
    time.sleep(pause)
    yield Row({"testRunId": f"r{i}-b", "scheduled": (day(i) + dt.timedelta(hours=1)).isoformat()}, day(i))


def hook_of(uri: str) -> Any:
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(connection=Connection(conn_id="warehouse", uri=uri))


def load(
    uri: str,
    i: int,
    pause: float,
    barrier: threading.Barrier | None = None,
    hook: Any = None,
    table: str = "public.quamotion_test_runs",
    **kw: Any,
) -> int:
    hook = hook or hook_of(uri)
    if barrier is not None:
        barrier.wait(timeout=30)
    return load_table(
        hook,
        table,
        slow_rows(i, pause, **kw),
        Columns(["testRunId", "scheduled"]),
        windowed=True,
        window=Window(day(i), day(i + 1)),
    )


def rows(uri: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute('SELECT "testRunId" FROM public.quamotion_test_runs ORDER BY 1')
        return cur.fetchall()


@pytest.mark.postgres
def test_ten_concurrent_first_loads_all_succeed(pg_database: str) -> None:
    barrier = threading.Barrier(LOADS)
    with ThreadPoolExecutor(LOADS) as pool:
        futures = [pool.submit(load, pg_database, i, 0.5, barrier) for i in range(LOADS)]
        counts = [f.result(timeout=120) for f in futures]  # re-raises a load's UniqueViolation
    assert counts == [2] * LOADS
    assert rows(pg_database) == sorted((f"r{i}-{s}",) for i in range(LOADS) for s in "ab")


@pytest.mark.postgres
def test_loads_into_an_existing_table_do_not_wait_for_each_other(pg_database: str) -> None:
    load(pg_database, 0, 0.0)  # the table exists now
    started = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(load, pg_database, 1, 3.0, started=started)
        assert started.wait(30)
        t0 = time.monotonic()
        assert load(pg_database, 2, 0.0) == 2  # another window, while the slow load's transaction is open
        assert time.monotonic() - t0 < 2.0
        assert not slow.done()
        assert slow.result(timeout=60) == 2
    assert len(rows(pg_database)) == 6


@pytest.mark.parametrize("existing", [False, True], ids=["first-loads", "existing-table"])
def test_ten_concurrent_loads_into_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import json
    import sqlite3

    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    TABLE = "quamotion_test_runs"
    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    if existing:
        load("", 99, 0.0, hook=SqliteHook(sqlite_conn_id="warehouse"), table=TABLE)
    barrier = threading.Barrier(LOADS)
    with ThreadPoolExecutor(LOADS) as pool:
        futures = [
            pool.submit(load, "", i, 0.05, barrier, SqliteHook(sqlite_conn_id="warehouse"), TABLE)
            for i in range(LOADS)
        ]
        counts = [f.result(timeout=120) for f in futures]  # re-raises "database is locked"
    assert counts == [2] * LOADS
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute('SELECT count(*) FROM "quamotion_test_runs"').fetchone()
    assert n == 2 * LOADS + (2 if existing else 0)
