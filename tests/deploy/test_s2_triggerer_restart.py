"""Scenario 2: the triggerer killed (SIGKILL) while a test-run wait is deferred, then restarted.

The nightly example's ``wait_for_test_run`` defers; once its trigger runs in the triggerer, the
triggerer's whole process group is SIGKILLed and a new triggerer started. The trigger is picked up
again (the dead triggerer's heartbeat goes stale), the task resumes from the trigger's event in its
first try and finishes, and the sandbox saw exactly one test run created for the DAG run.
"""

from __future__ import annotations

import time

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import NIGHTLY_TASKS
from tests.deploy.checks import NIGHTLY, assert_succeeded, created_test_runs
from tests.deploy.deployment import Deployment

WAIT = "wait_for_test_run"


def deferred_in_a_triggerer(deployment: Deployment, run_id: str) -> bool:
    """Whether the run's wait is deferred and its trigger is assigned to a triggerer."""
    rows = deployment.meta_query(
        "SELECT ti.state, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s AND ti.task_id = %s",
        NIGHTLY,
        run_id,
        WAIT,
    )
    return bool(rows) and rows[0][0] == "deferred" and rows[0][1] is not None


def test_a_deferred_wait_survives_a_killed_triggerer(
    deployment: Deployment, deploy_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = created_test_runs(deploy_sandbox, monkeypatch)
    deployment.unpause(NIGHTLY)
    run_id = deployment.trigger(NIGHTLY)
    deployment.wait_until(lambda: deferred_in_a_triggerer(deployment, run_id), 120, "the wait to defer")
    killed_at = time.time()
    deployment.kill("triggerer")
    assert deployment.task_instances(NIGHTLY, run_id)[WAIT]["state"] == "deferred"
    deployment.start_service("triggerer")
    deployment.wait_for_job("TriggererJob", killed_at)

    deployment.wait_for_dag_run(NIGHTLY, run_id, timeout=180)
    deployment.unpause(NIGHTLY, paused=True)
    assert_succeeded(deployment, NIGHTLY, run_id, NIGHTLY_TASKS)
    wait = deployment.task_instances(NIGHTLY, run_id)[WAIT]
    assert wait["try_number"] == 1  # resumed from the trigger's event, not retried
    test_run = deployment.xcom(NIGHTLY, run_id, "start_test_run")
    assert deployment.xcom(NIGHTLY, run_id, WAIT)["state"] == "success"
    assert created_test_runs(deploy_sandbox, monkeypatch) - before == {test_run}  # exactly one run
