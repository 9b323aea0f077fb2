"""The SQL export on every database it is tested with: SQLite, PostgreSQL, MariaDB and DuckDB.

Each through its Airflow provider's common.sql hook (sqlite, postgres, mysql, duckdb), against a
real database: PostgreSQL and MariaDB servers from Debian's packages started by ``scripts/postgres.sh``
and ``scripts/mariadb.sh`` (stopped when the session ends), SQLite and DuckDB files. Per database:
the column types and the queries they make possible, a rerun that leaves the same rows, a failure
that leaves the table unchanged, and merge mode.
"""

# The queries are built from quoted identifiers of the test's own tables, no outside values.
# ruff: noqa: S608
from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.export.sql import family_of
from tests.export.test_sql_types import JOBS, RUNS, load, rows_of

UTC = dt.timezone.utc
DATABASES = ["sqlite", "postgres", "mariadb", "duckdb"]


@dataclass
class Warehouse:
    """One database: its hook, how to query it, how it names types and quotes names."""

    name: str
    hook: Any
    query: Callable[[str], list[tuple[Any, ...]]]
    quote: str  # identifier quote character

    def q(self, name: str) -> str:
        return f"{self.quote}{name}{self.quote}"

    def types(self, table: str) -> dict[str, str]:
        """Column -> type as the database's catalog names it (lower case)."""
        if self.name == "sqlite":
            return {r[1]: r[2].lower() for r in self.query(f"PRAGMA table_info({table})")}
        if self.name == "postgres":
            sql = (
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                f"WHERE a.attrelid = '{table}'::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            )
            return {r[0]: r[1].lower() for r in self.query(sql)}
        where = f"table_name = '{table}'" + (
            " AND table_schema = DATABASE()" if self.name == "mariadb" else ""
        )
        rows = (
            self.query(f"SELECT column_name, column_type FROM information_schema.columns WHERE {where}")
            if (self.name == "mariadb")
            else self.query(f"SELECT column_name, data_type FROM information_schema.columns WHERE {where}")
        )
        return {str(r[0]): str(r[1]).lower() for r in rows}


def _sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    import sqlite3

    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    hook = SqliteHook(sqlite_conn_id="wh")

    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()

    return Warehouse("sqlite", hook, query, '"')


def _postgres(uri: str) -> Warehouse:
    import psycopg2
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg2.connect(uri) as conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else []

    return Warehouse("postgres", PostgresHook(connection=Connection(conn_id="wh", uri=uri)), query, '"')


def _mariadb(uri: str) -> Warehouse:
    import MySQLdb
    from airflow.models.connection import Connection
    from airflow.providers.mysql.hooks.mysql import MySqlHook

    conn_info = Connection(conn_id="wh", uri=uri)

    def query(sql: str) -> list[tuple[Any, ...]]:
        conn = MySQLdb.connect(
            host=conn_info.host, port=conn_info.port, user=conn_info.login, database=conn_info.schema
        )
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    return Warehouse("mariadb", MySqlHook(connection=conn_info), query, "`")


def _duckdb(tmp_path: Path) -> Warehouse:
    import duckdb
    from airflow.models.connection import Connection
    from airflow.providers.duckdb.hooks.duckdb import DuckDBHook

    db = tmp_path / "warehouse.duckdb"
    hook = DuckDBHook(duckdb_conn_id="wh")
    hook.airflow_connection = Connection(conn_id="wh", conn_type="duckdb", host=str(db))

    def query(sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(db)) as conn:
            return conn.execute(sql).fetchall()

    return Warehouse("duckdb", hook, query, '"')


@pytest.fixture
def mariadb_database(mariadb_uri: str) -> Iterator[str]:
    """A fresh database on the MariaDB test server for one test; its URI."""
    import MySQLdb
    from airflow.models.connection import Connection

    server = Connection(conn_id="admin", uri=mariadb_uri)
    name = f"qm_{uuid.uuid4().hex[:12]}"
    admin = MySQLdb.connect(host=server.host, port=server.port, user=server.login)
    try:
        admin.cursor().execute(f"CREATE DATABASE `{name}`")
        yield f"{mariadb_uri.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture(params=DATABASES)
def wh(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    if request.param == "sqlite":
        return _sqlite(tmp_path, monkeypatch)
    if request.param == "duckdb":
        return _duckdb(tmp_path)
    if request.param == "postgres":
        return _postgres(request.getfixturevalue("pg_database"))
    return _mariadb(request.getfixturevalue("mariadb_database"))


#: The declared types as each database's catalog names them (jobs: integer, float, timestamp,
#: boolean; test runs: integer, timestamp, JSON; the added columns: text).
EXPECTED_TYPES = {
    "sqlite": ("integer", "real", "text", "integer", "integer", "text", "text", "text"),
    "postgres": (
        *("bigint", "double precision", "timestamp with time zone", "boolean"),
        *("bigint", "timestamp with time zone", "jsonb", "text"),
    ),
    "mariadb": (
        *("bigint(20)", "double", "datetime(6)", "tinyint(1)"),
        *("bigint(20)", "datetime(6)", "longtext", "longtext"),
    ),
    "duckdb": (
        *("bigint", "double", "timestamp with time zone", "boolean"),
        *("bigint", "timestamp with time zone", "json", "varchar"),
    ),
}


def snapshot(wh: Warehouse, table: str) -> list[tuple[Any, ...]]:
    return sorted(wh.query(f"SELECT {wh.q('id')}, {wh.q('status')}, {wh.q('_record')} FROM {table}"))


def test_family(wh: Warehouse) -> None:
    conn = wh.hook.get_conn()
    try:
        assert family_of(wh.hook, conn) == {"mariadb": "mysql"}.get(wh.name, wh.name)
    finally:
        conn.close()


def test_typed_columns_and_the_queries_they_make_possible(wh: Warehouse) -> None:
    assert load(wh.hook, "jobs", "jobs", JOBS) == 4
    assert load(wh.hook, "runs", "test_runs", RUNS) == 3
    jobs, runs = wh.types("jobs"), wh.types("runs")
    got = tuple(jobs[c] for c in ("id", "duration", "started", "hasArtifacts"))
    got += tuple(runs[c] for c in ("operatingSystem", "scheduled", "jobs", "_record"))
    assert got == EXPECTED_TYPES[wh.name]
    q = wh.q
    assert [r[0] for r in wh.query(f"SELECT {q('id')} FROM jobs WHERE {q('duration')} > 100 ORDER BY 1")] == [
        12,
        31,
    ]
    assert wh.query(f"SELECT max({q('duration')}) FROM jobs") == [(599.2,)]
    flagged = wh.query(f"SELECT {q('id')} FROM jobs WHERE {q('hasArtifacts')} ORDER BY 1")
    assert [r[0] for r in flagged] == [11, 12]
    order = wh.query(f"SELECT {q('testRunId')} FROM runs ORDER BY {q('scheduled')}")
    assert [r[0] for r in order] == ["r1", "r3", "r2"]  # r2 is 09:00 UTC, r3 08:30 UTC (no offset)
    if wh.name != "sqlite":  # a real timestamp type: time arithmetic in the database
        (started,) = wh.query(f"SELECT {q('started')} FROM jobs WHERE {q('id')} = 12")[0]
        started = started if started.tzinfo else started.replace(tzinfo=UTC)  # MariaDB: DATETIME in UTC
        assert started == dt.datetime(2024, 1, 1, 8, 0, 7, 250000, tzinfo=UTC)
    (nested,) = wh.query(f"SELECT {q('jobs')} FROM runs WHERE {q('testRunId')} = 'r3'")[0]
    assert (json.loads(nested) if isinstance(nested, str) else nested) == [{"id": 7}]
    if wh.name in ("postgres", "mariadb", "duckdb"):  # JSON the database can look into
        path = {
            "postgres": f"SELECT {q('jobs')} -> 0 ->> 'id' FROM runs WHERE {q('testRunId')} = 'r3'",
            "mariadb": f"SELECT JSON_VALUE({q('jobs')}, '$[0].id') FROM runs WHERE {q('testRunId')} = 'r3'",
            "duckdb": f"SELECT {q('jobs')} -> 0 ->> 'id' FROM runs WHERE {q('testRunId')} = 'r3'",
        }[wh.name]
        assert wh.query(path) == [("7",)]


def test_a_rerun_leaves_the_same_rows(wh: Warehouse) -> None:
    load(wh.hook, "jobs", "jobs", JOBS)
    before = snapshot(wh, "jobs")
    load(wh.hook, "jobs", "jobs", JOBS)
    assert snapshot(wh, "jobs") == before
    assert len(before) == 4


def test_a_failure_leaves_the_table_unchanged(wh: Warehouse) -> None:
    load(wh.hook, "jobs", "jobs", JOBS)
    before = snapshot(wh, "jobs")

    def failing() -> Iterator[Any]:
        for n in range(2500):  # more than two batches are written before the failure
            yield from rows_of([{**JOBS[0], "id": 1000 + n, "status": "new"}])
        raise RuntimeError("the API went away")

    from airflow_provider_quamotion.export.sql import load_table
    from tests.export.test_sql_types import WHOLE, columns_of

    for mode in ("replace", "merge"):
        with pytest.raises(RuntimeError, match="went away"):
            load_table(
                wh.hook,
                "jobs",
                failing(),
                columns_of("jobs"),
                windowed=True,
                window=WHOLE,
                mode=mode,
                key=("id",),
            )
        assert snapshot(wh, "jobs") == before


def test_merge_lands_late_updates_without_duplicates(wh: Warehouse) -> None:
    load(wh.hook, "jobs", "jobs", JOBS)
    late = [{**JOBS[1], "status": "success", "duration": 601.5}, {**JOBS[3], "id": 32, "status": "queued"}]
    assert load(wh.hook, "jobs", "jobs", late, mode="merge") == 2
    q = wh.q
    got = wh.query(f"SELECT {q('id')}, {q('status')}, {q('duration')} FROM jobs ORDER BY 1")
    assert got == [
        (11, "success", 99.9),
        (12, "success", 601.5),
        (21, "skipped", None),
        (31, "canceled", 150.0),
        (32, "queued", 150.0),
    ]
    assert load(wh.hook, "jobs", "jobs", late, mode="merge") == 2  # again: the same rows
    assert wh.query("SELECT count(*) FROM jobs") == [(5,)]


def test_postgres_merge_copies_into_a_temporary_table(
    pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_quamotion.export import sql

    wh = _postgres(pg_database)
    load(wh.hook, "jobs", "jobs", JOBS)
    targets: list[str] = []
    original = sql._copier

    def spy(cursor: Any, target: str, quoted: list[str]) -> Any:
        targets.append(target)
        return original(cursor, target, quoted)

    monkeypatch.setattr(sql, "_copier", spy)
    late = [{**JOBS[1], "status": "success"}, {**JOBS[1], "status": "passed"}]  # one key twice: the last wins
    assert load(wh.hook, "jobs", "jobs", late, mode="merge", batch_size=1) == 2
    assert targets == ['"_quamotion_merge"']
    assert wh.query("SELECT status FROM jobs WHERE id = 12") == [("passed",)]
    assert wh.query("SELECT count(*) FROM jobs") == [(4,)]


def test_duckdb_inserts_each_batch_as_an_arrow_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import duckdb

    from airflow_provider_quamotion.export import sql

    wh = _duckdb(tmp_path)
    registered: list[int] = []
    original = sql._arrow_writer

    def spy(conn: Any, *args: Any) -> Any:
        write = original(conn, *args)
        assert write is not None  # pyarrow is installed: the Arrow path

        def counted(batch: Any) -> None:
            registered.append(len(batch))
            write(batch)

        return counted

    monkeypatch.setattr(sql, "_arrow_writer", spy)
    assert load(wh.hook, "jobs", "jobs", JOBS, batch_size=3) == 4
    assert registered == [3, 1]
    conn = wh.hook.get_conn()
    try:
        assert isinstance(conn, duckdb.DuckDBPyConnection)
    finally:
        conn.close()
