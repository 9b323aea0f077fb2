"""DAGs run by tests/export/test_dags.py with the real ``airflow dags test`` (outputs go to $QUAMOTION_TEST_OUT)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator

OUT = os.environ.get("QUAMOTION_TEST_OUT", "/tmp/quamotion-test-out")
DAY = OUT + "/dt={{ ds }}"
WINDOW = {"since": "{{ ds }}", "until": "{{ macros.ds_add(ds, 1) }}"}

with DAG(
    "quamotion_export_e2e",
    schedule="@daily",
    start_date=datetime(2020, 1, 1),
    catchup=False,
    default_args={"retries": 0},
) as e2e:
    exports = [
        QuamotionExportOperator(
            task_id="runs_jsonl", resource="test_runs", destination=DAY + "/test_runs.jsonl", **WINDOW
        ),
        QuamotionExportOperator(
            task_id="jobs_csv", resource="jobs", destination=DAY + "/jobs.csv", format="csv", **WINDOW
        ),
        QuamotionExportOperator(
            task_id="jobs_parquet",
            resource="jobs",
            destination=DAY + "/jobs.parquet",
            format="parquet",
            **WINDOW,
        ),
        QuamotionExportOperator(
            task_id="jobs_sqlite", resource="jobs", sql_conn_id="qm_sqlite", table="jobs", **WINDOW
        ),
        QuamotionExportOperator(
            task_id="jobs_postgres", resource="jobs", sql_conn_id="qm_postgres", table="jobs", **WINDOW
        ),
        QuamotionApiOperator(task_id="version", endpoint="/api/version"),
        QuamotionApiOperator(task_id="runs_file", endpoint="testRun", output_path=DAY + "/runs.json"),
    ]

    @task
    def collect(ds: str | None = None, ti: Any = None) -> None:
        ids = [t.task_id for t in exports]
        values = {i: ti.xcom_pull(task_ids=i) for i in ids}
        Path(OUT, f"xcom-{ds}.json").write_text(json.dumps(values, default=str))

    exports >> collect()


with DAG(
    "quamotion_export_failure",
    schedule="@daily",
    start_date=datetime(2020, 1, 1),
    catchup=False,
    default_args={"retries": 0},
) as failure:
    QuamotionExportOperator(
        task_id="jobs_file_fails", resource="jobs", destination=DAY + "/failed/jobs.jsonl"
    )
    QuamotionExportOperator(
        task_id="jobs_sqlite_fails", resource="jobs", sql_conn_id="qm_sqlite", table="jobs"
    )
    QuamotionApiOperator(task_id="xcom_guard", endpoint="testRun")
