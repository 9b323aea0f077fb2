"""Exports and API calls against the sandbox (a local Quamotion Cloud over TLS), into files and real databases."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionApiError
from airflow_provider_quamotion.export.columns import cell
from airflow_provider_quamotion.export.window import parse_instant, utc_text
from airflow_provider_quamotion.operators.quamotion import (
    QuamotionApiOperator,
    QuamotionExportOperator,
    QuamotionXComTooLargeError,
)
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.storage import TEMP_MARKER

pytestmark = pytest.mark.integration


def window_of(sb: Sandbox, first: int, last: int) -> tuple[str, str]:
    """``[scheduled of run first, scheduled of run last)`` as the sandbox serves them."""
    return sb.data.run(first)["scheduled"], sb.data.run(last)["scheduled"]


def in_time_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sandbox lists runs newest first; its run ids sort in time order, then job ids per run."""
    return sorted(records, key=lambda r: (r["testRunId"], r.get("id", 0)))


def expected_jobs(sb: Sandbox, since: Any = None, until: Any = None) -> list[dict[str, Any]]:
    return [
        {"testRunId": j["testRunId"], **j} for j in sb.expected_jobs(since, until, run_id_key="testRunId")
    ]


def test_test_runs_window_jsonl(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    since, until = window_of(sandbox_conn, 100, 160)
    target = tmp_path / "runs.jsonl"
    summary = QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(target), since=since, until=until
    ).execute({})
    got = [json.loads(line) for line in target.read_text().splitlines()]
    expected = list(sandbox_conn.expected_test_runs(since, until))
    assert got == expected
    assert got[-1]["testRunId"] == sandbox_conn.data.run_id(100)  # since is inclusive (newest first)
    assert sandbox_conn.data.run_id(160) not in {r["testRunId"] for r in got}  # until is exclusive
    assert summary["rows"] == len(expected) == 60


def test_jobs_csv_all(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "jobs.csv"
    # the whole history: until the sandbox's start leaves out runs other tests created since
    end = dt.datetime.fromtimestamp(sandbox_conn.settings.anchor, dt.timezone.utc).isoformat()
    summary = QuamotionExportOperator(
        task_id="t", resource="jobs", destination=str(target), format="csv", until=end
    ).execute({})
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    expected = expected_jobs(sandbox_conn, None, end)
    assert len(expected) > 500
    assert rows[0] == list(api.JOB_FIELDS)
    assert rows[1:] == [[cell(j.get(c)) or "" for c in api.JOB_FIELDS] for j in expected]
    assert summary["rows"] == len(expected)
    # one token for the whole fan-out
    assert sandbox_conn.counters()["tokens_issued"] <= 1


def test_jobs_parquet_through_faults(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    sandbox_conn.set_faults(path=r"/jobs$", status=[503, 429, "drop"], rate=0.2, retry_after=0)
    since, until = window_of(sandbox_conn, 0, 120)
    target = tmp_path / "jobs.parquet"
    QuamotionExportOperator(
        task_id="t", resource="jobs", destination=str(target), format="parquet", since=since, until=until
    ).execute({})
    assert sandbox_conn.counters()["faults_injected"] > 0
    table = pq.read_table(target)
    expected = expected_jobs(sandbox_conn, since, until)
    assert table.column("testRunId").to_pylist() == [j["testRunId"] for j in expected]
    assert table.column("id").to_pylist() == [j["id"] for j in expected]
    assert table.column("status").to_pylist() == [j["status"] for j in expected]


def test_failed_export_leaves_nothing(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    broken = sandbox_conn.data.run_id(150)
    sandbox_conn.set_faults(path=f"{broken}/jobs$", status=404)
    target = tmp_path / "dt=x" / "jobs.jsonl"
    with pytest.raises(QuamotionApiError, match="404"):
        QuamotionExportOperator(task_id="t", resource="jobs", destination=str(target)).execute({})
    assert not target.exists()
    assert not any(TEMP_MARKER in p.name for p in target.parent.iterdir())


def pg_rows(uri: str, table: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        columns = '"testRunId", "id", "status", "_scheduled_utc", "_record"'
        cur.execute(f'SELECT {columns} FROM {table} ORDER BY "_scheduled_utc", "id"')  # noqa: S608
        return cur.fetchall()


@pytest.mark.postgres
def test_jobs_into_postgres_window_rerun_and_rollback(
    sandbox_conn: Sandbox, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", pg_database)
    day1 = window_of(sandbox_conn, 10, 40)
    day2 = window_of(sandbox_conn, 40, 80)

    def export(window: tuple[str, str]) -> dict[str, Any]:
        return QuamotionExportOperator(
            task_id="t",
            resource="jobs",
            sql_conn_id="warehouse",
            table="public.quamotion_jobs",
            since=window[0],
            until=window[1],
            batch_size=50,
        ).execute({})

    assert export(day1)["destination"] == "public.quamotion_jobs"
    first = pg_rows(pg_database, "public.quamotion_jobs")
    expected = in_time_order(expected_jobs(sandbox_conn, *day1))
    assert [(r[0], int(r[1]), r[2]) for r in first] == [
        (j["testRunId"], j["id"], j["status"]) for j in expected
    ]
    assert [json.loads(r[4]) for r in first] == expected
    assert first[0][3] == utc_text(parse_instant(day1[0]))  # type: ignore[arg-type]
    assert export(day1)["rows"] == len(expected)
    assert pg_rows(pg_database, "public.quamotion_jobs") == first  # rerun: the same rows
    export(day2)
    both = pg_rows(pg_database, "public.quamotion_jobs")
    assert len(both) == len(expected) + len(expected_jobs(sandbox_conn, *day2))
    assert both[: len(first)] == first  # day 1 untouched by day 2
    # day 1 again, failing half-way: no change at all (the delete is rolled back too)
    sandbox_conn.set_faults(path=f"{sandbox_conn.data.run_id(30)}/jobs$", status=404)
    with pytest.raises(QuamotionApiError):
        export(day1)
    assert pg_rows(pg_database, "public.quamotion_jobs") == both


@pytest.mark.postgres
def test_unwindowed_resource_into_postgres_replaces_all(
    sandbox_conn: Sandbox, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2

    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", pg_database)
    for _ in range(2):
        summary = QuamotionExportOperator(
            task_id="t", resource="device_groups", sql_conn_id="warehouse", table="DeviceGroups"
        ).execute({})
    with psycopg2.connect(pg_database) as conn, conn.cursor() as cur:
        cur.execute('SELECT "deviceGroupId", "devices", jsonb_array_length("devices") FROM "DeviceGroups"')
        rows = cur.fetchall()
        cur.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'DeviceGroups' AND column_name IN ('devices', 'variables')"
        )
        types = dict(cur.fetchall())
    assert len(rows) == summary["rows"] > 0
    # nested values are JSON (jsonb on PostgreSQL): psycopg2 gives them back parsed, and SQL can query them
    assert types == {"devices": "jsonb", "variables": "jsonb"}
    assert all(isinstance(devices, list) and length == len(devices) for _, devices, length in rows)


def test_test_runs_into_sqlite(
    sandbox_conn: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    since, until = window_of(sandbox_conn, 0, 50)
    for _ in range(2):
        QuamotionExportOperator(
            task_id="t", resource="test_runs", sql_conn_id="lite", table="runs", since=since, until=until
        ).execute({})
    with sqlite3.connect(db) as conn:
        got = [r[0] for r in conn.execute('SELECT "testRunId" FROM runs ORDER BY "_scheduled_utc"')]
    assert got == [r["testRunId"] for r in in_time_order(list(sandbox_conn.expected_test_runs(since, until)))]


def test_api_operator_against_sandbox(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    version = QuamotionApiOperator(task_id="t", endpoint="/api/version").execute({})
    assert version["sandbox"] is True
    with pytest.raises(QuamotionXComTooLargeError, match="output_path"):
        QuamotionApiOperator(task_id="t", endpoint="testRun").execute({})
    target = tmp_path / "runs.json"
    uri = QuamotionApiOperator(task_id="t", endpoint="testRun", output_path=str(target)).execute({})
    assert uri == f"file://{target}"
    served = json.loads(target.read_text())
    generated = [r for r in served if sandbox_conn.data.run_index(r["testRunId"]) is not None]
    assert generated == list(sandbox_conn.expected_test_runs())  # other tests may have created runs
    groups = QuamotionApiOperator(
        task_id="t", endpoint="deviceGroup", response_filter=lambda r: [g["name"] for g in r.json()]
    ).execute({})
    assert groups and all(isinstance(g, str) for g in groups)
