"""The operators in real DAG runs: ``airflow dags test`` against the sandbox, SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.storage import TEMP_MARKER
from tests.dag_runs import AirflowHome

pytestmark = pytest.mark.e2e


@pytest.fixture
def run_env(sandbox_faultfree: Sandbox, pg_database: str, tmp_path: Path) -> dict[str, str]:
    """The connections and output directory of one test's DAG runs (on top of the home's settings)."""
    return {
        "QUAMOTION_TEST_OUT": str(tmp_path / "out"),
        "AIRFLOW_CONN_QUAMOTION_DEFAULT": sandbox_faultfree.connection_json,
        "AIRFLOW_CONN_QM_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}),
        "AIRFLOW_CONN_QM_POSTGRES": pg_database,
    }


def a_day_of_history(sb: Sandbox) -> str:
    return (dt.datetime.fromtimestamp(sb.settings.anchor, dt.timezone.utc) - dt.timedelta(days=10)).strftime(
        "%Y-%m-%d"
    )


def sqlite_jobs(env: dict[str, str]) -> list[tuple[Any, ...]]:
    db = json.loads(env["AIRFLOW_CONN_QM_SQLITE"])["host"]
    with sqlite3.connect(db) as conn:
        return conn.execute(
            'SELECT "testRunId", "id", "_record" FROM jobs ORDER BY "_scheduled_utc", "id"'
        ).fetchall()


def postgres_jobs(env: dict[str, str], day: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(env["AIRFLOW_CONN_QM_POSTGRES"]) as conn, conn.cursor() as cur:
        cur.execute(
            'SELECT "testRunId", "id", "_record" FROM jobs WHERE "_scheduled_utc" >= %s AND "_scheduled_utc" < %s '
            'ORDER BY "_scheduled_utc", "id"',
            (f"{day}T", f"{day}T\uffff"),
        )
        return cur.fetchall()


@pytest.mark.postgres
def test_export_dag_end_to_end_and_rerun(
    airflow_home: AirflowHome, run_env: dict[str, str], sandbox_faultfree: Sandbox
) -> None:
    sb = sandbox_faultfree
    day = a_day_of_history(sb)
    until = (dt.date.fromisoformat(day) + dt.timedelta(days=1)).isoformat()
    out = Path(run_env["QUAMOTION_TEST_OUT"]) / f"dt={day}"
    runs = list(sb.expected_test_runs(day, until))
    jobs = [{"testRunId": j["testRunId"], **j} for j in sb.expected_jobs(day, until, run_id_key="testRunId")]
    assert runs and jobs

    result = airflow_home.dags_test("quamotion_export_e2e", day, env=run_env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    assert [json.loads(line) for line in (out / "test_runs.jsonl").read_text().splitlines()] == runs
    with (out / "jobs.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["testRunId"], int(r["id"])) for r in rows] == [(j["testRunId"], j["id"]) for j in jobs]
    import pyarrow.parquet as pq

    assert pq.read_table(out / "jobs.parquet").column("id").to_pylist() == [j["id"] for j in jobs]
    served = json.loads((out / "runs.json").read_text())
    generated = [
        r for r in served if sb.data.run_index(r["testRunId"]) is not None
    ]  # not runs other tests created
    assert generated == list(sb.expected_test_runs())
    # the tables are read in time order (ORDER BY "_scheduled_utc", "id"); the API lists newest first
    oldest_first = {run["testRunId"]: n for n, run in enumerate(reversed(runs))}
    in_time_order = sorted(jobs, key=lambda j: (oldest_first[j["testRunId"]], j["id"]))
    assert [json.loads(r[2]) for r in sqlite_jobs(run_env)] == in_time_order
    pg_first = postgres_jobs(run_env, day)
    assert [json.loads(r[2]) for r in pg_first] == in_time_order

    xcoms = json.loads((Path(run_env["QUAMOTION_TEST_OUT"]) / f"xcom-{day}.json").read_text())
    assert xcoms["runs_jsonl"] == {
        "destination": f"file://{out / 'test_runs.jsonl'}",
        "rows": len(runs),
        "since": f"{day}T00:00:00+00:00",
        "until": f"{until}T00:00:00+00:00",
        "resource": "test_runs",
    }
    assert xcoms["jobs_postgres"]["destination"] == "jobs" and xcoms["jobs_postgres"]["rows"] == len(jobs)
    assert xcoms["runs_file"] == f"file://{out / 'runs.json'}"
    assert xcoms["version"]["sandbox"] is True

    # the same run again: the same files and the same rows, no duplicates
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    sqlite_before = sqlite_jobs(run_env)
    again = airflow_home.dags_test("quamotion_export_e2e", day, env=run_env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sqlite_jobs(run_env) == sqlite_before
    assert postgres_jobs(run_env, day) == pg_first


def test_failing_dag_leaves_nothing_behind(
    airflow_home: AirflowHome, run_env: dict[str, str], sandbox_faultfree: Sandbox
) -> None:
    sb = sandbox_faultfree
    day = a_day_of_history(sb)
    db = json.loads(run_env["AIRFLOW_CONN_QM_SQLITE"])["host"]
    with sqlite3.connect(db) as conn:
        conn.execute('CREATE TABLE jobs ("testRunId" TEXT, "id" TEXT, "_scheduled_utc" TEXT, "_record" TEXT)')
        conn.execute("INSERT INTO jobs VALUES ('keep', '1', NULL, '{}')")
    sb.set_faults(path=f"{sb.data.run_id(250)}/jobs$", status=404)

    result = airflow_home.dags_test("quamotion_export_failure", day, env=run_env)
    logs = result.stdout + result.stderr
    assert result.returncode != 0, logs[-4000:]
    assert "HTTP 404" in logs
    assert "over the XCom limit" in logs and "output_path" in logs
    failed_dir = Path(run_env["QUAMOTION_TEST_OUT"]) / f"dt={day}" / "failed"
    assert not (failed_dir / "jobs.jsonl").exists()
    assert not failed_dir.exists() or not any(TEMP_MARKER in p.name for p in failed_dir.iterdir())
    assert sqlite_jobs(run_env) == [("keep", "1", "{}")]
