"""DAGs run with the real ``airflow dags test`` against the sandbox (see tests/dag_runs.py).

``QUAMOTION_TEST_RESULTS`` names a directory the DAGs write files to (artifacts, uploads' inputs).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, PokeReturnValue

from airflow_provider_quamotion.operators.test_run import (
    QuamotionJobArtifactsOperator,
    QuamotionStartTestRunOperator,
    QuamotionUploadOperator,
)
from airflow_provider_quamotion.sensors.quamotion import QuamotionSensor, QuamotionTestRunSensor

RESULTS = os.environ.get("QUAMOTION_TEST_RESULTS", "/tmp/quamotion-test-results")
START = datetime(2024, 1, 1)
APP = {"appId": "demo.quamotion.Acquaint", "version": "151", "operatingSystem": "Android"}
PACKAGE = "quamotion-acquaint:0.0.6"
GROUP = "physical-android-8"
FAST = {"poke_interval": 0.3}


def start(task_id: str = "start", **kwargs: Any) -> QuamotionStartTestRunOperator:
    return QuamotionStartTestRunOperator(
        task_id=task_id, app=APP, test_package=PACKAGE, device_group=GROUP, **kwargs
    )


def groups_listed(body: Any) -> Any:
    """A generic sensor check: done when the device groups are listed; returns their count."""
    return PokeReturnValue(bool(body), {"groups": len(body)})


def second_call_passes(body: Any) -> bool:
    """A callable check that is false the first time (exercises the deferrable re-deferral)."""
    marker = os.path.join(RESULTS, "second_call_passes")
    if not os.path.exists(marker):
        os.makedirs(RESULTS, exist_ok=True)
        open(marker, "w").close()
        return False
    return isinstance(body, list)


with DAG("q_poke", schedule=None, start_date=START, catchup=False) as poke_dag:
    s = start()
    wait = QuamotionTestRunSensor(
        task_id="wait", test_run_id=s.output, mode="poke", deferrable=False, timeout=60, **FAST
    )
    s2 = start("start_second")
    rewait = QuamotionTestRunSensor(
        task_id="wait_reschedule",
        test_run_id=s2.output,
        mode="reschedule",
        deferrable=False,
        timeout=60,
        poke_interval=1,
    )
    save = QuamotionJobArtifactsOperator(
        task_id="save", test_run_id=s.output, destination=f"file://{RESULTS}/artifacts/{{{{ ds_nodash }}}}"
    )
    generic = QuamotionSensor(
        task_id="generic",
        endpoint="deviceGroup",
        response_check=groups_listed,
        deferrable=False,
        timeout=30,
        **FAST,
    )
    s >> wait >> [save, s2]  # the second run starts only now, so the reschedule sensor must wait

with DAG("q_deferrable", schedule=None, start_date=START, catchup=False) as deferrable_dag:
    app = QuamotionUploadOperator(task_id="upload_app", path=f"file://{RESULTS}/Shop-2.3.0.apk")
    package = QuamotionUploadOperator(
        task_id="upload_package", path=f"{RESULTS}/smoke-tests-1.0.2.zip", kind="test_package"
    )
    s = QuamotionStartTestRunOperator(
        task_id="start",
        app=app.output,
        test_package=package.output,
        device_group=GROUP,
        wait_for_completion=True,
        deferrable=True,
        poke_interval=0.3,
    )
    QuamotionTestRunSensor(task_id="wait", test_run_id=s.output, deferrable=True, timeout=60, **FAST)
    QuamotionSensor(
        task_id="generic",
        endpoint="deviceGroup",
        response_check=second_call_passes,
        deferrable=True,
        timeout=30,
        **FAST,
    )
    QuamotionSensor(
        task_id="generic_path",
        endpoint="deviceGroup",
        response_check="quamotion_test_dags.groups_listed",
        deferrable=True,
        timeout=30,
        **FAST,
    )


class FlakyStart(QuamotionStartTestRunOperator):
    """Loses its first try right after posting the run (as a lost worker would)."""

    def execute(self, context: Any) -> str:
        ti = context["ti"]
        if ti.try_number > 1:  # what a retry still sees of the previous try's XCom
            seen = ti.xcom_pull(task_ids=ti.task_id, key="test_run_id")
            _write("retry_saw_xcom", json.dumps(seen))
        return super().execute(context)

    def wait_in_worker(self, context: Any, hook: Any, test_run_id: str) -> str:
        if context["ti"].try_number == 1:
            _write("first_try_run_id", test_run_id)
            raise RuntimeError("staged worker loss after posting the run")
        return super().wait_in_worker(context, hook, test_run_id)


def _write(name: str, text: str) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name), "w") as fh:
        fh.write(text)


with DAG("q_failures", schedule=None, start_date=START, catchup=False) as failures_dag:
    # One chain: `dags test` runs one task (and one inline trigger) at a time, so each wait must
    # start right after its run is posted.
    failing = start("start_failing", parameters="fail please")
    wait_failed = QuamotionTestRunSensor(
        task_id="wait_failed", test_run_id=failing.output, deferrable=True, timeout=60, retries=2, **FAST
    )
    slow = start("start_slow", trigger_rule="all_done")
    wait_deadline = QuamotionTestRunSensor(
        task_id="wait_deadline", test_run_id=slow.output, deferrable=True, timeout=0.4, poke_interval=5
    )
    flaky = FlakyStart(
        task_id="start_flaky",
        app=APP,
        test_package=PACKAGE,
        device_group=GROUP,
        wait_for_completion=True,
        deferrable=False,
        poke_interval=0.3,
        retries=1,
        retry_delay=timedelta(seconds=0),
        trigger_rule="all_done",
    )
    failing >> wait_failed >> slow >> wait_deadline >> flaky
