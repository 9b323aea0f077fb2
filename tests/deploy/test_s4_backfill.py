"""Scenario 4: a 5-day backfill of the daily export, its runs in parallel.

The warehouse tables are dropped first, so the backfill's runs race on creating them (the first
load of each table, in parallel: PostgreSQL's ``CREATE TABLE IF NOT EXISTS`` race). The runs' data
intervals are disjoint and cover the five days without a gap; every partition and the warehouse
rows of the whole span equal the sandbox's records; every task succeeded in its first try.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.deploy.checks import (
    DAILY,
    DAILY_TASKS,
    TABLES,
    check_daily_export,
    expected,
    history_day,
    instant,
    warehouse_rows,
)
from tests.deploy.deployment import Deployment

DAYS = 5

# Several DAG runs through the scheduler and a worker (and the session's start-up, when run alone).
pytestmark = pytest.mark.timeout(600)


def test_a_parallel_backfill_exports_disjoint_complete_windows(
    deployment: Deployment, deploy_sandbox: Sandbox
) -> None:
    for table in TABLES.values():
        deployment.warehouse_query(f'DROP TABLE IF EXISTS "{table}"')
    first = history_day(deploy_sandbox, 9)
    # Runs at 02:00 of each day from `first`: to-date is inclusive of the 00:00 that follows the last.
    last = (dt.date.fromisoformat(first) + dt.timedelta(days=DAYS)).isoformat()
    deployment.unpause(DAILY)
    deployment.airflow(
        "backfill",
        "create",
        "--dag-id",
        DAILY,
        "--from-date",
        first,
        "--to-date",
        last,
        "--max-active-runs",
        str(DAYS),
    )
    runs = [
        run_id
        for (run_id,) in deployment.meta_query(
            "SELECT run_id FROM dag_run WHERE dag_id = %s AND run_type = 'backfill' ORDER BY logical_date",
            DAILY,
        )
    ]
    assert len(runs) == DAYS, runs
    deployment.wait_for_dag_runs(DAILY, runs, timeout=360)
    deployment.unpause(DAILY, paused=True)

    windows = sorted(check_daily_export(deployment, run_id) for run_id in runs)
    starts = [instant(since) for since, _ in windows]
    ends = [instant(until) for _, until in windows]
    assert starts[1:] == ends[:-1]  # disjoint and without a gap
    assert len(set(starts)) == DAYS
    for run_id in runs:
        tries = {t: ti["try_number"] for t, ti in deployment.task_instances(DAILY, run_id).items()}
        assert tries == dict.fromkeys(DAILY_TASKS, 1), (run_id, tries)  # no first load failed
    # In parallel: some runs overlapped in time.
    spans = sorted(
        (instant(run["start_date"]), instant(run["end_date"]))
        for run in (deployment.dag_run(DAILY, i) for i in runs)
    )
    assert any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans)), spans
    span_since, span_until = windows[0][0], windows[-1][1]
    for resource in TABLES:
        want = expected(deploy_sandbox, resource, span_since, span_until)
        got = warehouse_rows(deployment, resource, span_since, span_until)
        key = "testRunId" if resource == "test_runs" else "id"
        assert sorted(r[key] for r in got) == sorted(r[key] for r in want)
        assert len(got) == len(want)
