"""Scenario 3: the Celery worker killed (SIGKILL) mid-export, restarted, the tasks retried.

A clean run of the daily export loads a window first. A second run of the same window (a manual run
whose inferred data interval is that window) is slowed down by the sandbox (latency on the run and
job lists) and the worker's whole process group is SIGKILLed while its exports are running, the
jobs exports reading jobs (their files half written, their warehouse transaction open). A new worker starts; the scheduler
fails the orphaned tries (no heartbeat) and retries them. The retried run's files are byte for byte
the clean run's, no temporary file is left, and the warehouse holds each record once.
"""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.storage import TEMP_MARKER
from tests.deploy.checks import DAILY, DAILY_TASKS, TABLES, check_daily_export, history_day, warehouse_rows
from tests.deploy.deployment import Deployment

RETRY_DELAY = 300  # the example's default_args

# Several DAG runs through the scheduler and a worker (and the session's start-up, when run alone).
pytestmark = pytest.mark.timeout(600)


def test_a_killed_worker_retries_to_the_same_output(deployment: Deployment, deploy_sandbox: Sandbox) -> None:
    day = history_day(deploy_sandbox, 20)
    deployment.unpause(DAILY)
    clean_run = deployment.trigger(DAILY, logical_date=day)
    deployment.wait_for_dag_run(DAILY, clean_run, timeout=180)
    since, until = check_daily_export(deployment, clean_run)
    folder = {resource: deployment.exports / resource / f"dt={since[:10]}" for resource in TABLES}
    clean_files = {r: (folder[r] / f"{r}.jsonl").read_bytes() for r in TABLES}
    clean_rows = {r: warehouse_rows(deployment, r, since, until) for r in TABLES}

    # The same window again (01:00 infers the interval 00:00 does), slowed down, and killed mid-way.
    deploy_sandbox.set_faults(path=r"/api/testRun", latency_ms=1500)
    deploy_sandbox.reset_counters()
    later = (dt.datetime.fromisoformat(day) + dt.timedelta(hours=1)).isoformat()
    run_id = deployment.trigger(DAILY, logical_date=later)

    def states() -> dict[str, str]:
        return {t: ti["state"] for t, ti in deployment.task_instances(DAILY, run_id).items()}

    def jobs_exports_mid_way() -> bool:
        served = sum(n for p, n in deploy_sandbox.counters().get("by_path", {}).items() if "/jobs" in p)
        now = states()
        return now["jobs_to_warehouse"] == now["jobs_to_storage"] == "running" and served >= 2

    deployment.wait_until(jobs_exports_mid_way, 180, "the jobs exports to be reading jobs")
    deployment.kill("worker")
    killed = {t for t, state in states().items() if state == "running"}
    deploy_sandbox.clear_faults()
    deployment.start_service("worker")
    # The scheduler fails the orphaned tries (no heartbeat for 15 s) and puts them up for retry; the
    # example's retry_delay (5 minutes) is skipped, not waited for.
    retried: set[str] = set()
    while killed - retried:
        retried |= deployment.skip_retry_delay(DAILY, run_id, RETRY_DELAY)

    deployment.wait_for_dag_run(DAILY, run_id, timeout=240)
    deployment.unpause(DAILY, paused=True)
    assert check_daily_export(deployment, run_id) == (since, until)
    tries = {t: ti["try_number"] for t, ti in deployment.task_instances(DAILY, run_id).items()}
    # Each killed try failed, then was retried once; a task that had finished was not run again.
    assert {"jobs_to_warehouse", "jobs_to_storage"} <= killed
    assert tries == {t: 2 if t in killed else 1 for t in DAILY_TASKS}, (tries, killed)
    for resource in TABLES:
        assert (folder[resource] / f"{resource}.jsonl").read_bytes() == clean_files[resource]
        assert warehouse_rows(deployment, resource, since, until) == clean_rows[resource]
    assert not [p for p in deployment.exports.rglob("*") if TEMP_MARKER in p.name]
    # Each record once in the whole table (the killed transaction rolled back, the retry replaced).
    for resource, table in TABLES.items():
        key = "testRunId" if resource == "test_runs" else "id"
        ((total, distinct),) = deployment.warehouse_query(
            f'SELECT count(*), count(DISTINCT ("_record"::jsonb ->> \'{key}\')) FROM "{table}"'  # noqa: S608
        )
        assert total == distinct, (table, total, distinct)
