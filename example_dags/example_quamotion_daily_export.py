"""
### Daily export of Quamotion Cloud test runs and jobs

Each day's window of test runs (and their jobs) lands in two places:

* **object storage** as JSON lines, partitioned by the window's first day:
  `<base>/test_runs/dt=YYYY-MM-DD/test_runs.jsonl`
  (`<base>` is the Airflow Variable `quamotion_export_base`: a local path or any object storage URI,
  e.g. `s3://my-bucket/quamotion`, with `aws_default`-style connections handled by Airflow);
* **a SQL warehouse** through the connection `quamotion_warehouse` (SQLite by default; change that one
  connection to PostgreSQL, Snowflake... anything Airflow's common.sql reaches).

Windows are the DAG run's data interval (`since` inclusive, `until` exclusive), so catchup, backfills
and reruns are idempotent: a rerun replaces its window's file and its window's rows in one transaction.
A run triggered without a date (the UI's Trigger button, `airflow dags trigger`: `logical_date=None`,
no data interval, `ds` undefined) exports the last complete interval and logs which. The partition
(`dt=`) is named after the window, never after the logical date, so every kind of run of one window
writes the same file.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag
from airflow.timetables.interval import CronDataIntervalTimetable

from airflow_provider_quamotion.export.window import WINDOW_MACROS
from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

# --8<-- [start:export_window]
EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"
WAREHOUSE_CONN_ID = "quamotion_warehouse"
# The run's data interval; without one (a manual run without a date) the last complete interval.
WINDOW = {"since": "{{ export_window().since }}", "until": "{{ export_window().until }}"}
PARTITION = "dt={{ export_window().day }}"
# --8<-- [end:export_window]


@dag(
    dag_id="quamotion_daily_export",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=5)},
    user_defined_macros=WINDOW_MACROS,
    tags=["quamotion", "example"],
    doc_md=__doc__,
)
def quamotion_daily_export() -> None:
    # --8<-- [start:export_to_storage]
    QuamotionExportOperator(
        task_id="test_runs_to_storage",
        resource="test_runs",
        destination=EXPORT_BASE + "/test_runs/" + PARTITION + "/test_runs.jsonl",
        **WINDOW,
    )
    QuamotionExportOperator(
        task_id="jobs_to_storage",
        resource="jobs",
        destination=EXPORT_BASE + "/jobs/" + PARTITION + "/jobs.jsonl",
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
