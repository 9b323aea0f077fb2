"""Typed SQL columns, schema evolution and merge mode: SQLite and the real PostgreSQL server.

Before typed columns every column was ``TEXT``: ``duration > 100`` failed on PostgreSQL,
``max(duration)`` returned ``'99.9'``, ``WHERE "hasArtifacts"`` and time arithmetic failed, and
``ORDER BY scheduled`` sorted offsetless values wrongly. These tests run exactly those queries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.export import columns as columns_mod
from airflow_provider_quamotion.export.columns import MISFIT, Columns, check_schema, to_json, typed
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.sql import load_table
from airflow_provider_quamotion.export.window import Window, parse_instant

UTC = dt.timezone.utc
WHOLE = Window(None, None)

# duration 99.9 sorts after 599.2 as text; run r3's scheduled has no offset (UTC) and sorts
# before r2's "+02:00" value as text although it is later.
RUNS = [
    {"testRunId": "r1", "operatingSystem": 1, "scheduled": "2024-01-01T08:00:00+00:00", "jobs": []},
    {"testRunId": "r2", "operatingSystem": 2, "scheduled": "2024-01-01T11:00:00+02:00", "jobs": []},
    {"testRunId": "r3", "operatingSystem": 1, "scheduled": "2024-01-01T08:30:00", "jobs": [{"id": 7}]},
]
JOBS = [
    {
        "testRunId": "r1",
        "id": 11,
        "name": "a",
        "status": "success",
        "duration": 99.9,
        "started": "2024-01-01T08:00:05Z",
        "commitId": "c",
        "hasArtifacts": True,
    },
    {
        "testRunId": "r1",
        "id": 12,
        "name": "b",
        "status": "failed",
        "duration": 599.2,
        "started": "2024-01-01T08:00:07.250Z",
        "commitId": "c",
        "hasArtifacts": True,
    },
    {
        "testRunId": "r2",
        "id": 21,
        "name": "a",
        "status": "skipped",
        "duration": None,
        "started": None,
        "commitId": "c",
        "hasArtifacts": False,
    },
    {
        "testRunId": "r3",
        "id": 31,
        "name": "a",
        "status": "canceled",
        "duration": 150.0,
        "started": "2024-01-01T08:30:10",
        "commitId": "c",
        "hasArtifacts": False,
    },
]


def rows_of(records: list[dict[str, Any]]) -> Iterator[Row]:
    for r in records:
        yield Row(r, parse_instant(r.get("scheduled") or "2024-01-01T00:00:00Z"))


def columns_of(resource: str) -> Columns:
    return Columns(None, api.RESOURCES[resource].fields, api.FIELD_TYPES[resource])


def load(hook: Any, table: str, resource: str, records: list[dict[str, Any]], **kw: Any) -> int:
    kw.setdefault("key", api.RESOURCE_KEYS.get(resource, ()))
    return load_table(
        hook,
        table,
        rows_of(records),
        kw.pop("columns", None) or columns_of(resource),
        windowed=True,
        window=WHOLE,
        **kw,
    )


@pytest.fixture
def lite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    return SqliteHook(sqlite_conn_id="lite"), db


@pytest.fixture
def pg(pg_database: str) -> tuple[Any, str]:
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(connection=Connection(conn_id="warehouse", uri=pg_database)), pg_database


def pg_query(uri: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


# --- conversions -----------------------------------------------------------------------------------


def test_typed_conversions() -> None:
    assert typed("42", "integer") == 42 and typed(42.0, "integer") == 42
    assert (
        typed("abc", "integer") is MISFIT
        and typed(True, "integer") is MISFIT
        and typed(1.5, "integer") is MISFIT
    )
    assert typed(2**63, "integer") is MISFIT
    assert typed("152.9", "float") == 152.9 and typed(3, "float") == 3.0
    assert typed("nan", "float") is MISFIT and typed([1], "float") is MISFIT
    assert (
        typed("true", "boolean") is True
        and typed(False, "boolean") is False
        and typed(1, "boolean") is MISFIT
    )
    assert typed("2024-01-01T08:30:00", "timestamp") == dt.datetime(2024, 1, 1, 8, 30, tzinfo=UTC)
    assert typed("2024-01-01T11:00:00+02:00", "timestamp") == dt.datetime(2024, 1, 1, 9, tzinfo=UTC)
    assert typed("2024-01-01T08:00:05Z", "timestamp") == dt.datetime(2024, 1, 1, 8, 0, 5, tzinfo=UTC)
    assert typed("soon", "timestamp") is MISFIT and typed(1700000000, "timestamp") is MISFIT
    assert typed({"a": [1, "é"]}, "json") == '{"a":[1,"é"]}'
    assert typed(None, "float") is None and typed(7, "text") == "7"


def test_one_cached_json_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dumps(*a: Any, **k: Any) -> str:
        raise AssertionError("json.dumps builds an encoder per call")

    monkeypatch.setattr(columns_mod.json, "dumps", no_dumps)
    assert to_json({"b": 1, "a": "ü"}) == '{"b":1,"a":"ü"}'


def test_schema_validation() -> None:
    assert check_schema({"d": "FLOAT"}) == {"d": "float"}
    with pytest.raises(QuamotionConfigError, match="'d' has type 'decimal'"):
        check_schema({"d": "decimal"})


def test_every_declared_type_is_a_known_field() -> None:
    for name, types in api.FIELD_TYPES.items():
        assert set(types) <= set(api.RESOURCES[name].fields), name
        assert set(types.values()) <= set(columns_mod.COLUMN_TYPES), name
    assert set(api.FIELD_TYPES) == set(api.RESOURCES)


# --- SQLite ----------------------------------------------------------------------------------------


def test_sqlite_typed_jobs_and_runs_queries(lite: tuple[Any, Path]) -> None:
    hook, db = lite
    assert load(hook, "jobs", "jobs", JOBS) == 4
    assert load(hook, "runs", "test_runs", RUNS) == 3
    with sqlite3.connect(db) as conn:
        types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(jobs)")}
        assert types["id"] == "INTEGER" and types["duration"] == "REAL" and types["hasArtifacts"] == "INTEGER"
        assert [r[0] for r in conn.execute("SELECT id FROM jobs WHERE duration > 100 ORDER BY id")] == [
            12,
            31,
        ]
        assert conn.execute("SELECT max(duration) FROM jobs").fetchone() == (599.2,)
        assert [r[0] for r in conn.execute('SELECT id FROM jobs WHERE "hasArtifacts" ORDER BY id')] == [
            11,
            12,
        ]
        # time arithmetic on ISO UTC text: seconds from the run's first job start
        (gap,) = conn.execute(
            "SELECT round((julianday(max(started)) - julianday(min(started))) * 86400, 3) FROM jobs "
            "WHERE \"testRunId\" = 'r1'"
        ).fetchone()
        assert gap == 2.25
        assert conn.execute("SELECT started FROM jobs WHERE id = 31").fetchone() == (
            "2024-01-01T08:30:10.000000Z",
        )
        order = [r[0] for r in conn.execute('SELECT "testRunId" FROM runs ORDER BY scheduled')]
        assert order == ["r1", "r3", "r2"]  # r2 is 09:00 UTC, r3 08:30 UTC (no offset)
        assert conn.execute(
            'SELECT "operatingSystem", jobs FROM runs WHERE "testRunId" = \'r3\''
        ).fetchone() == (
            1,
            '[{"id":7}]',
        )


def test_endpoint_exports_keep_text_unless_schema(lite: tuple[Any, Path]) -> None:
    hook, db = lite
    records = [{"id": 1, "duration": 99.9}, {"id": 2, "duration": 599.2}]
    load_table(hook, "plain", rows_of(records), Columns(None), windowed=False, window=WHOLE)
    load_table(
        hook,
        "typed",
        rows_of(records),
        Columns(None, (), {"duration": "float"}),
        windowed=False,
        window=WHOLE,
    )
    with sqlite3.connect(db) as conn:
        assert {r[2] for r in conn.execute("PRAGMA table_info(plain)")} == {"TEXT"}
        assert conn.execute("SELECT max(duration) FROM plain").fetchone() == ("99.9",)
        assert conn.execute("SELECT max(duration) FROM typed").fetchone() == (599.2,)


def test_odd_values_load_as_null_with_the_record_kept(
    lite: tuple[Any, Path], caplog: pytest.LogCaptureFixture
) -> None:
    hook, db = lite
    odd = [
        {**JOBS[0], "duration": "fast"},
        {**JOBS[1], "started": "yesterday", "hasArtifacts": "maybe"},
        JOBS[2],
    ]
    with caplog.at_level(logging.WARNING):
        assert load(hook, "jobs", "jobs", odd) == 3
    with sqlite3.connect(db) as conn:
        got = conn.execute(
            'SELECT id, duration, started, "hasArtifacts", _record FROM jobs ORDER BY id'
        ).fetchall()
    assert got[0][:2] == (11, None) and got[1][2:4] == (None, None)
    assert [json.loads(r[4]) for r in got] == odd
    assert (
        "3 value(s) did not fit" in caplog.text
        and "duration: 1" in caplog.text
        and "started: 1" in caplog.text
    )


def test_sqlite_conflicting_column_type_is_one_clear_error(lite: tuple[Any, Path]) -> None:
    hook, db = lite
    with sqlite3.connect(db) as conn:
        conn.execute(
            'CREATE TABLE jobs ("testRunId" TEXT, "id" INTEGER, "duration" BLOB, "_scheduled_utc" TEXT, "_record" TEXT)'
        )
    with pytest.raises(
        QuamotionConfigError, match=r"Column 'duration' of jobs is blob.*as float \(REAL\).*Fix"
    ):
        load(hook, "jobs", "jobs", JOBS)


def test_sqlite_legacy_text_table_still_loads(lite: tuple[Any, Path]) -> None:
    hook, db = lite
    names = ", ".join(f'"{n}" TEXT' for n in (*api.JOB_FIELDS, "_scheduled_utc", "_record"))
    with sqlite3.connect(db) as conn:
        conn.execute(f"CREATE TABLE jobs ({names})")
    assert load(hook, "jobs", "jobs", JOBS) == 4
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT duration FROM jobs WHERE id = '12'").fetchone() == ("599.2",)


def test_sqlite_add_new_columns(lite: tuple[Any, Path], caplog: pytest.LogCaptureFixture) -> None:
    hook, db = lite
    old = Columns(None, [f for f in api.JOB_FIELDS if f != "duration"], api.FIELD_TYPES["jobs"])
    load(hook, "jobs", "jobs", JOBS, columns=old)
    with caplog.at_level(logging.WARNING):
        load(hook, "jobs", "jobs", JOBS)  # without the option: left out, named in a warning
    assert "has no column 'duration'" in caplog.text and "add_new_columns=True" in caplog.text
    load(hook, "jobs", "jobs", JOBS, add_new_columns=True)
    with sqlite3.connect(db) as conn:
        types = {r[1]: r[2] for r in conn.execute("PRAGMA table_info(jobs)")}
        assert types["duration"] == "REAL"
        assert conn.execute("SELECT max(duration), count(*) FROM jobs").fetchone() == (599.2, 4)


def test_sqlite_merge_lands_late_job_updates_without_duplicates(lite: tuple[Any, Path]) -> None:
    hook, db = lite
    load(hook, "jobs", "jobs", JOBS[:2], mode="merge")
    late = [{**JOBS[1], "status": "success", "duration": 600.5}, JOBS[2], JOBS[3]]
    load(hook, "jobs", "jobs", late, mode="merge")
    load(hook, "jobs", "jobs", late, mode="merge")  # a rerun changes nothing
    with sqlite3.connect(db) as conn:
        got = conn.execute("SELECT id, status, duration FROM jobs ORDER BY id").fetchall()
    assert got == [
        (11, "success", 99.9),
        (12, "success", 600.5),
        (21, "skipped", None),
        (31, "canceled", 150.0),
    ]


def test_merge_needs_a_key(lite: tuple[Any, Path]) -> None:
    hook, _ = lite
    with pytest.raises(QuamotionConfigError, match="mode='merge' needs the key"):
        load(hook, "apps", "applications", [{"appId": "x"}], mode="merge")


# --- PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_typed_queries(pg: tuple[Any, str]) -> None:
    hook, uri = pg
    assert load(hook, "public.jobs", "jobs", JOBS) == 4
    assert load(hook, "public.runs", "test_runs", RUNS) == 3
    types = dict(
        pg_query(
            uri,
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'jobs'",
        )
    )
    assert types["id"] == "bigint" and types["duration"] == "double precision"
    assert types["started"] == "timestamp with time zone" and types["hasArtifacts"] == "boolean"
    assert [r[0] for r in pg_query(uri, "SELECT id FROM jobs WHERE duration > 100 ORDER BY id")] == [12, 31]
    assert pg_query(uri, "SELECT max(duration) FROM jobs") == [(599.2,)]
    assert [r[0] for r in pg_query(uri, 'SELECT id FROM jobs WHERE "hasArtifacts" ORDER BY id')] == [11, 12]
    (gap,) = pg_query(uri, "SELECT max(started) - min(started) FROM jobs WHERE \"testRunId\" = 'r1'")[0]
    assert gap == dt.timedelta(seconds=2.25)
    assert pg_query(uri, "SELECT started FROM jobs WHERE id = 31") == [
        (dt.datetime(2024, 1, 1, 8, 30, 10, tzinfo=UTC),)
    ]
    assert pg_query(uri, "SELECT count(*) FROM jobs WHERE started > now() - interval '100 years'") == [(3,)]
    assert [r[0] for r in pg_query(uri, 'SELECT "testRunId" FROM runs ORDER BY scheduled')] == [
        "r1",
        "r3",
        "r2",
    ]
    assert pg_query(
        uri, "SELECT jobs -> 0 ->> 'id', jsonb_typeof(jobs) FROM runs WHERE \"testRunId\" = 'r3'"
    ) == [("7", "array")]


@pytest.mark.postgres
def test_postgres_odd_value_and_conflicting_table(pg: tuple[Any, str]) -> None:
    hook, uri = pg
    assert load(hook, "public.jobs", "jobs", [{**JOBS[0], "duration": "fast"}, JOBS[1]]) == 2
    assert pg_query(uri, "SELECT id, duration FROM jobs ORDER BY id") == [(11, None), (12, 599.2)]
    assert json.loads(pg_query(uri, "SELECT _record FROM jobs WHERE id = 11")[0][0])["duration"] == "fast"
    pg_query(
        uri,
        'CREATE TABLE public.bad ("testRunId" text, "id" bigint, "started" date, "_scheduled_utc" text, "_record" text)',
    )
    with pytest.raises(QuamotionConfigError) as err:
        load(hook, "public.bad", "jobs", JOBS)
    message = str(err.value)
    assert "Column 'started' of public.bad is date" in message
    assert 'ALTER TABLE "public"."bad" ALTER COLUMN "started" TYPE TIMESTAMPTZ' in message
    assert pg_query(uri, "SELECT count(*) FROM bad") == [(0,)]


@pytest.mark.postgres
def test_postgres_add_new_columns_and_merge(pg: tuple[Any, str]) -> None:
    hook, uri = pg
    old = Columns(None, [f for f in api.JOB_FIELDS if f != "hasArtifacts"], api.FIELD_TYPES["jobs"])
    load(hook, "public.jobs", "jobs", JOBS[:2], columns=old, mode="merge")
    late = [{**JOBS[1], "status": "success", "duration": 600.5}, *JOBS[2:]]
    load(hook, "public.jobs", "jobs", late, mode="merge", add_new_columns=True)
    load(hook, "public.jobs", "jobs", late, mode="merge", add_new_columns=True)
    got = pg_query(uri, 'SELECT id, status, duration, "hasArtifacts" FROM jobs ORDER BY id')
    assert got == [
        (11, "success", 99.9, None),  # loaded before the column existed
        (12, "success", 600.5, True),
        (21, "skipped", None, False),
        (31, "canceled", 150.0, False),
    ]


@pytest.mark.postgres
def test_postgres_replace_loads_through_copy(pg: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_quamotion.export import sql

    hook, uri = pg
    copied: list[str] = []
    original = sql._copier

    def spy(cursor: Any, target: str, quoted: list[str]) -> Any:
        path = original(cursor, target, quoted)
        assert path is not None  # psycopg has COPY
        write, finish = path

        def counted(text: str) -> None:
            copied.append(text)
            write(text)

        return counted, finish

    monkeypatch.setattr(sql, "_copier", spy)
    odd = {**JOBS[0], "name": "tab\there\nnew line \\N back\\slash é", "commitId": None}
    assert load(hook, "public.jobs", "jobs", [odd, *JOBS[1:]], batch_size=2) == 4
    assert [t.count("\n") for t in copied] == [2, 2]  # the rows went through COPY FROM STDIN, 2 a batch
    got = pg_query(uri, 'SELECT name, "commitId", started, _record FROM jobs WHERE id = 11')[0]
    assert got[:3] == (odd["name"], None, dt.datetime(2024, 1, 1, 8, 0, 5, tzinfo=UTC))
    assert json.loads(got[3]) == odd
    assert pg_query(uri, "SELECT max(duration), count(*) FROM jobs") == [(599.2, 4)]
