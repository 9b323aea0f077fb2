"""Scenario 1: every example DAG under a real scheduler, triggerer and Celery worker.

Each example DAG is triggered as Airflow 3 triggers by default (``POST dagRuns`` without a logical
date: no ``ds``, no data interval) and with a date; the daily export is also unpaused, so the
scheduler runs its latest interval. Every run succeeds, and the outputs equal the sandbox's records.
"""

from __future__ import annotations

import json
import zipfile

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import NIGHTLY_TASKS
from tests.deploy.checks import (
    API,
    API_TASKS,
    DAILY,
    NIGHTLY,
    assert_succeeded,
    check_daily_export,
    history_day,
    instant,
    read_jsonl,
)
from tests.deploy.deployment import Deployment

# Several DAG runs through the scheduler and a worker (and the session's start-up, when run alone).
pytestmark = pytest.mark.timeout(600)


def test_every_example_dag_with_and_without_a_date(deployment: Deployment, deploy_sandbox: Sandbox) -> None:
    date = history_day(deploy_sandbox, 12)
    runs: dict[str, list[str]] = {}
    for dag_id in (DAILY, NIGHTLY, API):
        runs[dag_id] = [deployment.trigger(dag_id), deployment.trigger(dag_id, logical_date=date)]
    for dag_id in (NIGHTLY, API, DAILY):
        deployment.unpause(dag_id)
    # The scheduler's own run of the daily export (catchup=False: the latest complete interval).
    deployment.wait_until(
        lambda: any(r["run_type"] == "scheduled" for r in deployment.dag_runs(DAILY)),
        120,
        "the scheduler to create a run of the daily export",
    )
    scheduled = [r["dag_run_id"] for r in deployment.dag_runs(DAILY) if r["run_type"] == "scheduled"]
    runs[DAILY] += scheduled
    for dag_id, ids in runs.items():
        deployment.wait_for_dag_runs(dag_id, ids, timeout=300)
    deployment.unpause(DAILY, paused=True)
    deployment.unpause(NIGHTLY, paused=True)

    # The daily export: each run's window in its partition and in the warehouse.
    no_date, dated, *by_scheduler = runs[DAILY]
    windows = {run_id: check_daily_export(deployment, run_id) for run_id in runs[DAILY]}
    for run_id in (dated, *by_scheduler):  # a run with a date exports its data interval
        run = deployment.dag_run(DAILY, run_id)
        interval = (instant(run["data_interval_start"]), instant(run["data_interval_end"]))
        assert tuple(instant(t) for t in windows[run_id]) == interval, run
    assert instant(deployment.dag_run(DAILY, dated)["logical_date"]) == instant(date)
    # A manual run without a date exports the last complete interval: the scheduler's own run's.
    assert by_scheduler and windows[no_date] == windows[by_scheduler[0]]
    assert deployment.dag_run(DAILY, no_date)["logical_date"] is None
    log = deployment.task_log(DAILY, no_date, "test_runs_to_storage")
    assert "no logical date" in log and windows[no_date][0] in log, log[-3000:]

    # The nightly test run: one sandbox run each, artifacts in their own tree.
    for run_id in runs[NIGHTLY]:
        assert_succeeded(deployment, NIGHTLY, run_id, NIGHTLY_TASKS)
        test_run = deployment.xcom(NIGHTLY, run_id, "start_test_run")
        assert deploy_sandbox.data.run_index(test_run) is None  # created through the API, not generated
        assert deployment.xcom(NIGHTLY, run_id, "wait_for_test_run")["state"] == "success"
        folder = deployment.exports / "test_run_artifacts" / test_run
        jobs = read_jsonl(folder / "jobs.jsonl")
        assert jobs and all(j["status"] == "success" for j in jobs)
        for job in jobs:
            assert (folder / f"job-{job['id']}.log").read_text(encoding="utf-8").strip()
            with zipfile.ZipFile(folder / f"job-{job['id']}-artifacts.zip") as archive:
                assert archive.testzip() is None
    assert not any((deployment.exports / "test_runs").glob("*/job-*"))  # not beside the partitions

    # The API and sensor example: the raw list under the run's run_after day.
    for run_id in runs[API]:
        assert_succeeded(deployment, API, run_id, API_TASKS)
        run = deployment.dag_run(API, run_id)
        uri = deployment.xcom(API, run_id, "all_test_runs_to_storage")
        path = deployment.exports / "raw" / str(run["run_after"])[:10] / "testRun.json"
        assert uri == f"file://{path}"
        served = json.loads(path.read_text(encoding="utf-8"))
        generated = [r for r in served if deploy_sandbox.data.run_index(r["testRunId"]) is not None]
        assert generated == list(deploy_sandbox.expected_test_runs())
