"""The event-driven example DAG's own logic: its Asset and watcher, and its tasks on trigger events.

Its trigger and the same DAG shape run in a real Airflow (scheduler, triggerer, Celery worker) in
``tests/deploy/test_event_trigger.py``; here the example file itself is loaded and its tasks'
callables are run on events as Airflow hands them over (``triggering_asset_events``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_quamotion.compat import AirflowFailException
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunEventTrigger
from tests.dag_runs import EXAMPLE_DAGS

pytestmark = pytest.mark.e2e


@dataclass
class Event:
    """An asset event as ``triggering_asset_events`` yields it (only ``extra`` is read)."""

    extra: dict[str, Any] = field(default_factory=dict)


class Events(Mapping[Any, list[Event]]):
    """``triggering_asset_events``: the events of each Asset, looked up by the Asset (by its name)."""

    def __init__(self, by_name: dict[str, list[Event]]) -> None:
        self.by_name = by_name

    def __getitem__(self, asset: Any) -> list[Event]:
        return self.by_name[asset.name]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.by_name)

    def __len__(self) -> int:
        return len(self.by_name)


def example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "example_quamotion_event_driven", EXAMPLE_DAGS / "example_quamotion_event_driven.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def payload(run_id: str, state: str = "success") -> dict[str, Any]:
    jobs = [{"id": 1, "device": "pixel", "status": state}]
    return {"test_run_id": run_id, "state": state, "job_count": 1, "jobs": jobs}


def test_the_asset_is_watched_by_the_event_trigger_with_stable_arguments() -> None:
    module = example()
    (watcher,) = module.finished_test_runs.watchers
    assert isinstance(watcher.trigger, QuamotionTestRunEventTrigger)
    again = example()  # a second parse gives the same trigger (Airflow identifies it by its arguments)
    assert watcher.trigger.serialize() == again.finished_test_runs.watchers[0].trigger.serialize()
    dag = module.quamotion_event_driven()
    condition = dag.timetable.asset_condition
    scheduled_on = [asset.name for asset in getattr(condition, "objects", [condition])]
    assert scheduled_on == [module.finished_test_runs.name]  # scheduled on the watched Asset


def test_finished_runs_reads_every_event_once_per_run_and_skips_manual_events() -> None:
    module = example()
    dag = module.quamotion_event_driven()
    finished_runs = dag.get_task("finished_runs").python_callable
    events = Events(
        {
            module.finished_test_runs.name: [
                Event({"from_trigger": True, "payload": payload("a")}),
                Event({"from_trigger": True, "payload": payload("b", "failed")}),
                Event({"from_trigger": True, "payload": payload("a")}),  # a duplicate after a restart
                Event({}),  # an asset event made by hand: no payload
            ]
        }
    )
    assert [r["test_run_id"] for r in finished_runs(triggering_asset_events=events)] == ["a", "b"]
    assert finished_runs(triggering_asset_events=Events({})) == []


def test_alert_on_failure_fails_naming_the_failed_run() -> None:
    module = example()
    dag = module.quamotion_event_driven()
    alert = dag.get_task("alert_on_failure").python_callable
    assert alert([payload("a")]) == ["a"]
    with pytest.raises(AirflowFailException, match="test run b finished and did not pass.*pixel: failed"):
        alert([payload("a"), payload("b", "failed")])
