"""
### Nightly mobile test run on Quamotion Cloud

1. upload the app and the test package built by your CI (paths or object storage URIs from the
   Variables `quamotion_app_path` and `quamotion_test_package_path`);
2. start a test run on a device group (posted once, in the worker; a retry of the task resumes the
   same run instead of starting another);
3. wait for it **deferrably**: no worker slot is held while the devices run the tests;
4. save every job's log and artifacts to storage, whatever the outcome, under
   `<base>/test_run_artifacts/<test run id>/` (a tree of its own, apart from the exports' partitions);
5. export the run's jobs as JSON lines beside them (`jobs.jsonl`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import chain, dag

from airflow_provider_quamotion.operators.quamotion import (
    QuamotionExportOperator,
    QuamotionJobArtifactsOperator,
    QuamotionStartTestRunOperator,
    QuamotionUploadOperator,
)
from airflow_provider_quamotion.sensors.quamotion import QuamotionTestRunSensor

EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"
TEST_RUN_ID = "{{ ti.xcom_pull(task_ids='start_test_run') }}"
# A tree of its own: beside the daily export's test_runs/dt=.../ partitions, a lake table on
# test_runs/ would pick up these logs, zips and jobs.jsonl.
ARTIFACTS = EXPORT_BASE + "/test_run_artifacts/" + TEST_RUN_ID


@dag(
    dag_id="quamotion_nightly_test_run",
    schedule="0 1 * * *",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["quamotion", "example"],
    doc_md=__doc__,
)
def quamotion_nightly_test_run() -> None:
    # --8<-- [start:upload]
    upload_app = QuamotionUploadOperator(
        task_id="upload_app", path="{{ var.value.quamotion_app_path }}", kind="application"
    )
    upload_tests = QuamotionUploadOperator(
        task_id="upload_test_package", path="{{ var.value.quamotion_test_package_path }}", kind="test_package"
    )
    # --8<-- [end:upload]

    # --8<-- [start:start_test_run]
    start = QuamotionStartTestRunOperator(
        task_id="start_test_run",
        app=upload_app.output,
        test_package=upload_tests.output,
        device_group="{{ var.value.get('quamotion_device_group', 'physical-android-8') }}",
        parameters="-Tag nightly",
        retries=2,
    )
    # --8<-- [end:start_test_run]

    # --8<-- [start:wait_deferrable]
    wait = QuamotionTestRunSensor(
        task_id="wait_for_test_run",
        test_run_id=start.output,
        deferrable=True,
        poke_interval=5,
        timeout=pendulum.duration(hours=2).total_seconds(),
    )
    # --8<-- [end:wait_deferrable]

    # --8<-- [start:artifacts]
    save = QuamotionJobArtifactsOperator(
        task_id="save_logs_and_artifacts",
        test_run_id=start.output,
        destination=ARTIFACTS,
        trigger_rule="all_done",
    )
    # --8<-- [end:artifacts]

    export_jobs = QuamotionExportOperator(
        task_id="export_run_jobs",
        endpoint="testRun/" + TEST_RUN_ID + "/jobs",
        destination=ARTIFACTS + "/jobs.jsonl",
        trigger_rule="all_done",
    )

    chain([upload_app, upload_tests], start, wait, [save, export_jobs])


quamotion_nightly_test_run()
