"""
### Daily export of Quamotion Cloud test runs and jobs

Each day's window of test runs (and their jobs) lands in two places:

* **object storage** as JSON lines, partitioned by `{{ ds }}`: `<base>/test_runs/dt=YYYY-MM-DD/test_runs.jsonl`
  (`<base>` is the Airflow Variable `quamotion_export_base`: a local path or any object storage URI,
  e.g. `s3://my-bucket/quamotion`, with `aws_default`-style connections handled by Airflow);
* **a SQL warehouse** through the connection `quamotion_warehouse` (SQLite by default; change that one
  connection to PostgreSQL, Snowflake... anything Airflow's common.sql reaches).

Windows are the DAG run's data interval (`since` inclusive, `until` exclusive), so catchup and reruns
are idempotent: a rerun replaces its window's file and its window's rows in one transaction.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

# --8<-- [start:export_window]
EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"
WAREHOUSE_CONN_ID = "quamotion_warehouse"
WINDOW = {"since": "{{ data_interval_start }}", "until": "{{ data_interval_end }}"}
# --8<-- [end:export_window]


@dag(
    dag_id="quamotion_daily_export",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
    tags=["quamotion", "example"],
    doc_md=__doc__,
)
def quamotion_daily_export() -> None:
    # --8<-- [start:export_to_storage]
    QuamotionExportOperator(
        task_id="test_runs_to_storage",
        resource="test_runs",
        destination=EXPORT_BASE + "/test_runs/dt={{ ds }}/test_runs.jsonl",
        **WINDOW,
    )
    QuamotionExportOperator(
        task_id="jobs_to_storage",
        resource="jobs",
        destination=EXPORT_BASE + "/jobs/dt={{ ds }}/jobs.jsonl",
        max_concurrency=8,
        **WINDOW,
    )
    # --8<-- [end:export_to_storage]

    # --8<-- [start:export_to_sql]
    QuamotionExportOperator(
        task_id="test_runs_to_warehouse",
        resource="test_runs",
        sql_conn_id=WAREHOUSE_CONN_ID,
        table="quamotion_test_runs",
        **WINDOW,
    )
    QuamotionExportOperator(
        task_id="jobs_to_warehouse",
        resource="jobs",
        sql_conn_id=WAREHOUSE_CONN_ID,
        table="quamotion_jobs",
        **WINDOW,
    )
    # --8<-- [end:export_to_sql]


quamotion_daily_export()
