"""The event-driven example's shape with a short poll, for the deployment test of the event trigger.

The example DAG (``example_quamotion_event_driven.py``) polls every minute, as a production DAG
would; this one polls every 2 s so ``tests/deploy/test_event_trigger.py`` stays short. Its Asset
is watched only while the DAG is unpaused (the deployment creates DAGs paused).
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Asset, AssetAlias, AssetWatcher, dag, task

from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunEventTrigger

DAG_ID = "quamotion_event_watch"
ASSET = "quamotion_event_watch_runs"
JOBS_ALIAS = "quamotion_event_watch_jobs"
EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"

finished = Asset(
    ASSET,
    watchers=[
        AssetWatcher(
            name=ASSET + "_watcher",
            trigger=QuamotionTestRunEventTrigger(poll_interval=2, lookback=900),
        )
    ],
)


@dag(
    dag_id=DAG_ID,
    schedule=[finished],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["quamotion", "deploy-test"],
)
def quamotion_event_watch() -> None:
    @task
    def finished_runs(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        runs: dict[str, dict[str, Any]] = {}
        for event in triggering_asset_events.get(finished, ()) if triggering_asset_events else ():
            payload = (event.extra or {}).get("payload")
            if isinstance(payload, dict) and payload.get("test_run_id"):
                runs[payload["test_run_id"]] = {k: payload[k] for k in ("test_run_id", "state", "job_count")}
        return list(runs.values())

    runs = finished_runs()
    QuamotionExportOperator.partial(
        task_id="export_jobs", format="jsonl", asset_alias=JOBS_ALIAS, outlets=[AssetAlias(JOBS_ALIAS)]
    ).expand_kwargs(
        runs.map(
            lambda run: {
                "endpoint": f"testRun/{run['test_run_id']}/jobs",
                "destination": f"{EXPORT_BASE}/event_watch/{run['test_run_id']}/jobs.jsonl",
            }
        )
    )


quamotion_event_watch()
