"""
### Event-driven: run once per finished Quamotion Cloud test run

No schedule and no sensor: the Asset `quamotion_finished_test_runs` is watched by
`QuamotionTestRunEventTrigger` in the triggerer (one shared token and HTTP client for every Quamotion
trigger). Each test run of the project that finishes becomes one Asset event carrying its id, state,
per-status job counts and finish time, and this DAG runs on it:

1. `finished_runs` reads the events that triggered the DAG run (Airflow may put several events that
   arrived between two scheduler loops into one DAG run, so it reads them all);
2. `export_jobs` exports each run's jobs to `<base>/finished_test_runs/<test run id>/jobs.jsonl`
   (one mapped task per run; a rerun rewrites the same file, so an event delivered twice after a
   triggerer restart changes nothing);
3. `alert_on_failure` fails, naming each failed run and its failed jobs, when a run did not pass, so
   the DAG's usual failure notifications (e-mail, Slack callbacks) fire.

See docs/events.md for the delivery guarantee and the trigger's filters.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import Asset, AssetAlias, AssetWatcher, dag, task

from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunEventTrigger

EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"
FINISHED_RUN_JOBS = "quamotion_finished_run_jobs"

# --8<-- [start:asset]
finished_test_runs = Asset(
    "quamotion_finished_test_runs",
    watchers=[
        AssetWatcher(
            name="quamotion_finished_test_runs_watcher",
            trigger=QuamotionTestRunEventTrigger(
                poll_interval=60,
                # never emit runs that finished before the DAG was deployed (a fixed time: the
                # trigger's arguments must not change between two parses of this file)
                since="2026-12-01T00:00:00Z",
                lookback=6 * 3600,
            ),
        )
    ],
)
# --8<-- [end:asset]


@dag(
    dag_id="quamotion_event_driven",
    schedule=[finished_test_runs],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["quamotion", "example"],
    doc_md=__doc__,
)
def quamotion_event_driven() -> None:
    # --8<-- [start:events]
    @task
    def finished_runs(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The finished runs of the events that triggered this DAG run, one per run id."""
        runs: dict[str, dict[str, Any]] = {}
        events = triggering_asset_events.get(finished_test_runs, ()) if triggering_asset_events else ()
        for event in events:
            payload = (event.extra or {}).get("payload")  # a manual asset event has none
            if isinstance(payload, dict) and payload.get("test_run_id"):
                runs[payload["test_run_id"]] = payload
        return list(runs.values())

    # --8<-- [end:events]

    runs = finished_runs()

    # --8<-- [start:export]
    # each file is also an Asset event (through the alias: the paths are known only at run time), so
    # other DAGs can be scheduled on the exported data
    QuamotionExportOperator.partial(
        task_id="export_jobs",
        format="jsonl",
        asset_alias=FINISHED_RUN_JOBS,
        outlets=[AssetAlias(FINISHED_RUN_JOBS)],
    ).expand_kwargs(
        runs.map(
            lambda run: {
                "endpoint": f"testRun/{run['test_run_id']}/jobs",
                "destination": f"{EXPORT_BASE}/finished_test_runs/{run['test_run_id']}/jobs.jsonl",
            }
        )
    )
    # --8<-- [end:export]

    @task
    def alert_on_failure(finished: list[dict[str, Any]]) -> list[str]:
        """Fail, naming the failed runs and jobs, when a run did not pass; the passed run ids otherwise."""
        from airflow_provider_quamotion.compat import AirflowFailException
        from airflow_provider_quamotion.runs import format_run_failure

        failed = [run for run in finished if run["state"] != "success"]
        if failed:
            raise AirflowFailException(
                " ".join(format_run_failure(r["test_run_id"], r["jobs"], r["job_count"]) for r in failed)
            )
        return [run["test_run_id"] for run in finished]

    alert_on_failure(runs)


quamotion_event_driven()
