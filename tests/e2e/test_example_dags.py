"""Every DAG of ``example_dags/`` run by the real ``airflow dags test`` against a sandbox of its own.

The three DAGs run in parallel, each in its own Airflow home (the shared harness, :mod:`tests.dag_runs`),
with the Variables and connections they need given through the environment as ``scripts/demo.py``
does: ``quamotion_export_base``, ``quamotion_app_path``, ``quamotion_test_package_path`` and the
``quamotion_warehouse`` SQLite connection. The sandbox is this module's own (the nightly DAG starts
a run and uploads an app and a package, which the session sandbox's users must not see), with short
run durations.

The three DAGs also run as Airflow 3 triggers them by default, without a logical
date (``dag.test(logical_date=None)``: no ``ds``, no data interval, as after the UI's Trigger button
or ``airflow dags trigger``): the export writes the last complete interval, into the partition named
after that window, and logs which.

Also: every example DAG file imports with no network call, no import error and no DeprecationWarning.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import (
    API_AND_SENSOR_TASKS,
    DAILY_EXPORT_TASKS,
    EXAMPLE_DAGS,
    NIGHTLY_TASKS,
    DagRun,
    airflow_env,
    make_airflow_home,
    migrated_template,
)

pytestmark = pytest.mark.e2e

DAG_IDS = ("quamotion_daily_export", "quamotion_nightly_test_run", "quamotion_api_and_sensor")
#: Parsed (offline, no warnings) with the others; its trigger runs in a real Airflow in tests/deploy/.
EVENT_DRIVEN = ("quamotion_event_driven",)
FILES = EXAMPLE_DAGS / "files"


@pytest.fixture(scope="module")
def example_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox: small data, runs queued 0.5 s and running 1 s."""
    with Sandbox(
        tmp_path_factory.mktemp("example-sandbox"), runs=200, seed=3, queue_seconds=0.5, run_seconds=1.0
    ) as sb:
        yield sb


def history_day(sb: Sandbox, days_back: int = 10) -> str:
    """A day well inside the sandbox's generated history."""
    anchor = dt.datetime.fromtimestamp(sb.settings.anchor, dt.timezone.utc)
    return (anchor - dt.timedelta(days=days_back)).strftime("%Y-%m-%d")


@pytest.fixture(scope="module")
def example_runs(example_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DagRun]:
    """The three example DAGs, run in parallel, each with its own home, outputs and warehouse."""
    migrated_template()  # once, before the parallel runs copy it
    root = tmp_path_factory.mktemp("example-dags")
    today = dt.datetime.fromtimestamp(example_sandbox.settings.anchor, dt.timezone.utc).strftime("%Y-%m-%d")
    dates = {
        "quamotion_daily_export": history_day(example_sandbox),
        "quamotion_nightly_test_run": today,
        "quamotion_api_and_sensor": today,
    }
    runs: dict[str, DagRun] = {}
    for dag_id in DAG_IDS:
        out = root / dag_id
        env = {
            "AIRFLOW_VAR_QUAMOTION_EXPORT_BASE": str(out / "exports"),
            "AIRFLOW_VAR_QUAMOTION_APP_PATH": str(FILES / "Acquaint.apk"),
            "AIRFLOW_VAR_QUAMOTION_TEST_PACKAGE_PATH": str(FILES / "acquaint-tests.zip"),
            "AIRFLOW_CONN_QUAMOTION_WAREHOUSE": json.dumps(
                {"conn_type": "sqlite", "host": str(out / "warehouse.db")}
            ),
        }
        runs[dag_id] = DagRun(
            dag_id,
            out / "home",
            out,
            dags_folder=EXAMPLE_DAGS,
            logical_date=dates[dag_id],
            extra_env=env,
        ).start(example_sandbox.connection_json)
    for run in runs.values():
        run.wait(timeout=240)
    return runs


#: Run a DAG once like ``airflow dags test``, but without a logical date (a manual trigger's default).
NO_DATE_RUNNER = r"""
import sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
run = bag.dags[sys.argv[2]].test(logical_date=None)
print("DAG RUN STATE", run.state, "LOGICAL DATE", run.logical_date)
sys.exit(0 if str(run.state) in ("success", "DagRunState.SUCCESS") else 1)
"""


class NoDateRun(DagRun):
    """A :class:`DagRun` of ``dag.test(logical_date=None)`` instead of ``airflow dags test DATE``."""

    def start(self, connection_json: str | None = None) -> DagRun:
        env = dict(self.extra_env)
        if connection_json is not None:
            env["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = connection_json
        self.airflow_home = make_airflow_home(self.home, self.dags_folder)
        self.process = subprocess.Popen(
            [sys.executable, "-c", NO_DATE_RUNNER, str(self.dags_folder), self.dag_id],
            env=self.airflow_home.environ(env),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self


def dag_env(out: Path) -> dict[str, str]:
    """The Variables and the warehouse connection of an example DAG writing under ``out``."""
    return {
        "AIRFLOW_VAR_QUAMOTION_EXPORT_BASE": str(out / "exports"),
        "AIRFLOW_VAR_QUAMOTION_APP_PATH": str(FILES / "Acquaint.apk"),
        "AIRFLOW_VAR_QUAMOTION_TEST_PACKAGE_PATH": str(FILES / "acquaint-tests.zip"),
        "AIRFLOW_CONN_QUAMOTION_WAREHOUSE": json.dumps(
            {"conn_type": "sqlite", "host": str(out / "warehouse.db")}
        ),
    }


@pytest.fixture(scope="module")
def no_date_runs(example_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, DagRun]:
    """The three example DAGs run without a logical date, in parallel."""
    migrated_template()
    root = tmp_path_factory.mktemp("example-dags-no-date")
    runs: dict[str, DagRun] = {}
    for dag_id in DAG_IDS:
        out = root / dag_id
        runs[dag_id] = NoDateRun(
            dag_id, out / "home", out, dags_folder=EXAMPLE_DAGS, extra_env=dag_env(out)
        ).start(example_sandbox.connection_json)
    for run in runs.values():
        run.wait(timeout=240)
    return runs


def exports(run: DagRun) -> Path:
    assert run.results is not None
    return run.results / "exports"


def assert_all_tasks_succeeded(run: DagRun, tasks: frozenset[str]) -> None:
    assert run.returncode == 0, run.tail()
    states = run.task_states()
    assert {t: s for t, (s, _) in states.items()} == dict.fromkeys(tasks, "success"), run.tail()


def interval(run: DagRun) -> tuple[str, str, str]:
    """``(ds, data_interval_start, data_interval_end)`` of the run, from the metadata DB."""
    (start, end, logical), *_ = run.query(
        "SELECT data_interval_start, data_interval_end, logical_date FROM dag_run WHERE dag_id = ?",
        run.dag_id,
    )
    return str(logical)[:10], str(start), str(end)


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def warehouse_records(run: DagRun, table: str) -> list[Any]:
    assert run.results is not None
    with sqlite3.connect(run.results / "warehouse.db") as db:
        rows = db.execute(f'SELECT "_record" FROM "{table}" ORDER BY rowid').fetchall()  # noqa: S608
    return [json.loads(r[0]) for r in rows]


def test_daily_export(example_runs: dict[str, DagRun], example_sandbox: Sandbox) -> None:
    sb = example_sandbox
    run = example_runs["quamotion_daily_export"]
    assert_all_tasks_succeeded(run, DAILY_EXPORT_TASKS)
    _, since, until = interval(run)
    runs = list(sb.expected_test_runs(since, until))
    jobs = list(sb.expected_jobs(since, until, run_id_key="testRunId"))
    assert runs and jobs, (since, until)
    day = since[:10]  # the partition is the window's first day, not the logical date's
    assert sorted(p.name for p in (exports(run) / "test_runs").iterdir()) == [f"dt={day}"]
    assert read_jsonl(exports(run) / "test_runs" / f"dt={day}" / "test_runs.jsonl") == runs
    assert read_jsonl(exports(run) / "jobs" / f"dt={day}" / "jobs.jsonl") == jobs
    assert warehouse_records(run, "quamotion_test_runs") == runs
    assert warehouse_records(run, "quamotion_jobs") == jobs
    summary = run.xcom("jobs_to_warehouse")
    assert summary["rows"] == len(jobs) and summary["destination"] == "quamotion_jobs"


def test_nightly_test_run(example_runs: dict[str, DagRun], example_sandbox: Sandbox) -> None:
    run = example_runs["quamotion_nightly_test_run"]
    assert_all_tasks_succeeded(run, NIGHTLY_TASKS)
    assert run.xcom("upload_app")["operatingSystem"] == "Android"
    run_id = run.xcom("start_test_run")
    assert run.xcom("wait_for_test_run")["state"] == "success"
    folder = exports(run) / "test_run_artifacts" / run_id
    assert not (exports(run) / "test_runs").exists()  # not beside the daily export's partitions
    jobs = read_jsonl(folder / "jobs.jsonl")
    assert jobs and all(j["status"] == "success" for j in jobs)
    saved = run.xcom("save_logs_and_artifacts")
    # a small summary, not the list of URIs (issue 15)
    assert saved["count"] == len(list(folder.glob("job-*"))) and saved["total_bytes"] > 0
    assert str(saved["destination"]).startswith("file://") and saved["test_run_id"] == run_id
    for job in jobs:
        log = folder / f"job-{job['id']}.log"
        assert log.read_text(encoding="utf-8").strip()
        with zipfile.ZipFile(folder / f"job-{job['id']}-artifacts.zip") as archive:
            assert archive.testzip() is None
            assert archive.namelist()
    # the run is the sandbox's: started from the uploaded app and package
    assert example_sandbox.data.run_index(run_id) is None  # created, not generated


def test_api_and_sensor(example_runs: dict[str, DagRun], example_sandbox: Sandbox) -> None:
    sb = example_sandbox
    run = example_runs["quamotion_api_and_sensor"]
    assert_all_tasks_succeeded(run, API_AND_SENSOR_TASKS)
    assert run.xcom("get_version")["sandbox"] is True
    groups = run.xcom("android_device_groups")
    assert groups and all("android" in name for name in groups)
    ds, _, _ = interval(run)
    uri = run.xcom("all_test_runs_to_storage")
    path = exports(run) / "raw" / ds / "testRun.json"
    assert uri == f"file://{path}"
    served = json.loads(path.read_text(encoding="utf-8"))
    generated = [r for r in served if sb.data.run_index(r["testRunId"]) is not None]  # not the nightly's
    assert generated == list(sb.expected_test_runs())


def test_daily_export_without_a_logical_date(
    no_date_runs: dict[str, DagRun], example_sandbox: Sandbox
) -> None:
    from airflow.timetables.interval import CronDataIntervalTimetable

    sb = example_sandbox
    run = no_date_runs["quamotion_daily_export"]
    assert_all_tasks_succeeded(run, DAILY_EXPORT_TASKS)
    ((logical, start, run_after),) = run.query(
        "SELECT logical_date, data_interval_start, run_after FROM dag_run WHERE dag_id = ?", run.dag_id
    )
    assert logical is None and start is None  # a run as the Trigger button makes it
    import pendulum

    expected = CronDataIntervalTimetable("0 2 * * *", timezone="UTC").infer_manual_data_interval(
        run_after=pendulum.parse(str(run_after).replace(" ", "T"))
    )
    since, until = expected.start.isoformat(), expected.end.isoformat()
    runs = list(sb.expected_test_runs(since, until))
    jobs = list(sb.expected_jobs(since, until, run_id_key="testRunId"))
    assert runs and jobs, (since, until)
    day = expected.start.strftime("%Y-%m-%d")
    assert read_jsonl(exports(run) / "test_runs" / f"dt={day}" / "test_runs.jsonl") == runs
    assert read_jsonl(exports(run) / "jobs" / f"dt={day}" / "jobs.jsonl") == jobs
    assert warehouse_records(run, "quamotion_test_runs") == runs
    assert warehouse_records(run, "quamotion_jobs") == jobs
    summary = run.xcom("test_runs_to_storage")
    assert (summary["since"], summary["until"]) == (since, until), summary
    assert "no logical date" in run.output and since in run.output, run.tail()


def test_api_and_sensor_without_a_logical_date(no_date_runs: dict[str, DagRun]) -> None:
    run = no_date_runs["quamotion_api_and_sensor"]
    assert_all_tasks_succeeded(run, API_AND_SENSOR_TASKS)
    ((run_after,),) = run.query("SELECT run_after FROM dag_run WHERE dag_id = ?", run.dag_id)
    path = exports(run) / "raw" / str(run_after)[:10] / "testRun.json"
    assert run.xcom("all_test_runs_to_storage") == f"file://{path}"
    assert json.loads(path.read_text(encoding="utf-8"))


def test_nightly_test_run_without_a_logical_date(no_date_runs: dict[str, DagRun]) -> None:
    run = no_date_runs["quamotion_nightly_test_run"]
    assert_all_tasks_succeeded(run, NIGHTLY_TASKS)
    ((logical,),) = run.query("SELECT logical_date FROM dag_run WHERE dag_id = ?", run.dag_id)
    assert logical is None
    folder = exports(run) / "test_run_artifacts" / run.xcom("start_test_run")
    jobs = read_jsonl(folder / "jobs.jsonl")
    assert jobs and all((folder / f"job-{job['id']}.log").is_file() for job in jobs)


IMPORT_PROBE = r"""
import json, socket, sys, warnings
from pathlib import Path

connects = []

def refuse(*args, **kwargs):
    connects.append(repr(args[1:] if args else kwargs)[:200])
    raise OSError("network access at DAG-parse time")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

from airflow.dag_processing.dagbag import DagBag  # warm up: Airflow's own import-time warnings are not the DAGs'

DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
result = {"dags": {}, "errors": {}, "warnings": []}
for path in sorted(Path(sys.argv[1]).glob("*.py")):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=path, safe_mode=False)
    result["errors"].update({Path(k).name: str(v)[-2000:] for k, v in bag.import_errors.items()})
    result["warnings"] += [
        f"{path.name}: {w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
        for w in caught
        if issubclass(w.category, DEPRECATIONS)
    ]
    result["warnings"] += [
        f"{Path(k).name}: {w}" for k, ws in bag.captured_warnings.items() for w in ws if "Deprecat" in str(w)
    ]
    result["dags"][path.name] = sorted(bag.dag_ids)
result["connects"] = connects
print(json.dumps(result))
"""


def test_example_dag_files_import_offline_without_warnings(tmp_path: Path) -> None:
    env = airflow_env(tmp_path / "home", EXAMPLE_DAGS)
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(EXAMPLE_DAGS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["connects"] == []
    assert result["warnings"] == []
    assert sorted(d for dags in result["dags"].values() for d in dags) == sorted(DAG_IDS + EVENT_DRIVEN)
    assert all(len(dags) == 1 for dags in result["dags"].values()), result["dags"]
