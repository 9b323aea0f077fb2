"""The event trigger in a real Airflow (scheduler, dag-processor, triggerer, Celery worker, PostgreSQL):
one Asset event and one processed DAG run per finished test run, across a SIGKILLed triggerer.

``tests/deploy/dags/quamotion_event_watch.py`` watches the deployment's sandbox with
:class:`~airflow_provider_quamotion.triggers.quamotion.QuamotionTestRunEventTrigger` (every 2 s). The
test unpauses it, starts run A and waits for its event, its DAG run and its saved progress (the
watched Asset's state store, Airflow 3.3); kills the triggerer; starts run B, which finishes while no
triggerer runs; starts a triggerer again. B must then be emitted (nothing lost) and A not again
(saved progress: no duplicate); each run's jobs are exported and emitted as an Asset event through
the export's alias. Below Airflow 3.3 (no state store) A is emitted again after the restart, as
documented (at-least-once).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_quamotion.compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_quamotion.sandbox import Sandbox
from tests.deploy.deployment import Deployment
from tests.sandbox_helpers import start_run

DAG_ID = "quamotion_event_watch"
ASSET = "quamotion_event_watch_runs"
JOBS_ALIAS = "quamotion_event_watch_jobs"
TRIGGER_CLASS = "airflow_provider_quamotion.triggers.quamotion.QuamotionTestRunEventTrigger"


def reparse(deployment: Deployment, dag_id: str) -> None:
    """Ask the dag-processor to parse a DAG's file now (a watcher is registered or dropped then)."""
    token = deployment.api_json(f"/api/v2/dags/{dag_id}")["file_token"]
    deployment.api_json(f"/api/v2/parseDagFile/{token}", "PUT")


def watcher_triggers(deployment: Deployment) -> list[tuple[Any, ...]]:
    """The event trigger's rows (id, triggerer) for the watched Asset."""
    return deployment.meta_query(
        "SELECT t.id, t.triggerer_id FROM trigger t JOIN asset_watcher w ON w.trigger_id = t.id "
        "JOIN asset a ON a.id = w.asset_id WHERE a.name = %s AND t.classpath = %s",
        ASSET,
        TRIGGER_CLASS,
    )


def emitted(deployment: Deployment) -> Counter[str]:
    """How many Asset events the trigger emitted per test run id."""
    rows = deployment.meta_query(
        "SELECT ae.extra FROM asset_event ae JOIN asset a ON a.id = ae.asset_id WHERE a.name = %s", ASSET
    )
    counts: Counter[str] = Counter()
    for (extra,) in rows:
        payload = (json.loads(extra) if isinstance(extra, str) else extra).get("payload") or {}
        counts[str(payload.get("test_run_id"))] += 1
    return counts


def saved_progress(deployment: Deployment) -> dict[str, Any]:
    """The trigger's saved progress in the watched Asset's state store (``{}`` when none)."""
    rows = deployment.meta_query(
        "SELECT s.value FROM asset_state_store s JOIN asset a ON a.id = s.asset_id WHERE a.name = %s", ASSET
    )
    if not rows:
        return {}
    value = json.loads(rows[0][0])
    return value if isinstance(value, dict) else {}


def processed(deployment: Deployment) -> Counter[str]:
    """How many finished DAG runs processed each test run (the ``finished_runs`` task's XCom)."""
    counts: Counter[str] = Counter()
    for run in deployment.dag_runs(DAG_ID):
        if run["state"] != "success":
            continue
        for item in deployment.xcom(DAG_ID, run["dag_run_id"], "finished_runs") or []:
            counts[item["test_run_id"]] += 1
    return counts


def finished(sandbox: Sandbox, run_id: str) -> bool:
    from airflow_provider_quamotion import api
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    return api.run_state_from_jobs(QuamotionHook().list_jobs(run_id)).is_terminal


@pytest.fixture
def watching(
    deployment: Deployment, deploy_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The watch DAG unpaused, its watcher assigned to a triggerer; paused and dropped afterwards."""
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", deploy_sandbox.connection_json)
    deployment.unpause(DAG_ID)
    reparse(deployment, DAG_ID)
    deployment.wait_until(
        lambda: any(row[1] is not None for row in watcher_triggers(deployment)),
        120,
        "the event trigger to run in a triggerer",
    )
    try:
        yield
    finally:
        deployment.unpause(DAG_ID, paused=True)
        reparse(deployment, DAG_ID)  # a paused DAG's Asset is not watched: the trigger goes
        deployment.wait_until(
            lambda: not watcher_triggers(deployment), 120, "the event trigger to be dropped"
        )


@pytest.mark.timeout(900)  # three waits on the scheduler and a triggerer restart, on a busy machine
@pytest.mark.usefixtures("watching")
def test_one_event_per_finished_run_across_a_killed_triggerer(
    deployment: Deployment, deploy_sandbox: Sandbox
) -> None:
    before = start_run()
    deployment.wait_until(lambda: emitted(deployment)[before] >= 1, 120, f"the event of run {before}")
    deployment.wait_until(lambda: processed(deployment)[before] >= 1, 240, f"a DAG run for run {before}")
    if AIRFLOW_V_3_3_PLUS:  # the progress is saved one poll after the event left
        deployment.wait_until(
            lambda: before in saved_progress(deployment).get("settled", {}), 60, "the saved progress"
        )

    killed_at = time.time()
    deployment.kill("triggerer")
    while_down = start_run()
    deployment.wait_until(lambda: finished(deploy_sandbox, while_down), 60, f"run {while_down} to finish")
    assert emitted(deployment)[while_down] == 0  # no triggerer ran meanwhile
    deployment.start_service("triggerer")
    deployment.wait_for_job("TriggererJob", killed_at)

    deployment.wait_until(lambda: emitted(deployment)[while_down] >= 1, 120, f"the event of run {while_down}")
    deployment.wait_until(lambda: processed(deployment)[while_down] >= 1, 240, f"a DAG run for {while_down}")
    if AIRFLOW_V_3_3_PLUS:  # two more saves: the trigger polled on past both runs
        saved_at = saved_progress(deployment).get("saved")
        deployment.wait_until(lambda: saved_progress(deployment).get("saved") != saved_at, 60, "a save")
        saved_at = saved_progress(deployment).get("saved")
        deployment.wait_until(lambda: saved_progress(deployment).get("saved") != saved_at, 60, "a save")

    events = emitted(deployment)
    assert events[while_down] == 1, events  # finished while no triggerer ran: emitted, once
    assert events[before] == (1 if AIRFLOW_V_3_3_PLUS else 2), events  # below 3.3: replayed, as documented
    exported = deployment.exports / "event_watch"
    for run_id in (before, while_down):
        rows = [json.loads(line) for line in (exported / run_id / "jobs.jsonl").read_text().splitlines()]
        assert rows and all(r["status"] in ("success", "failed") for r in rows)
    uris = {
        row[0]
        for row in deployment.meta_query(
            "SELECT a.uri FROM asset_event ae JOIN asset a ON a.id = ae.asset_id "
            "JOIN asset_alias_asset_event aae ON aae.event_id = ae.id "
            "JOIN asset_alias al ON al.id = aae.alias_id WHERE al.name = %s",
            JOBS_ALIAS,
        )
    }
    assert {f"file://{exported / r / 'jobs.jsonl'}" for r in (before, while_down)} <= uris
