"""Sensors and triggers ride out transient failures and still honour their deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_quamotion.exceptions import QuamotionError
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.sensors.quamotion import QuamotionTestRunSensor
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger
from tests import sandbox_helpers

#: Transient failures on the polled path: a third of the polls fail (429, 503, dropped connections).
FLAKY_JOBS = {"rules": [{"path": r"/jobs$", "status": [429, 503, "drop"], "rate": 0.35, "retry_after": 0}]}
#: How late past its deadline a wait may end (polling granularity and the event's own round trip).
GRACE_SECONDS = 3.0


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox: the runs it starts must not show in the session sandbox's run count."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``own_sandbox`` as ``quamotion_default`` (overrides the session-wide fixture here)."""
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


def start_run(parameters: str = "") -> str:
    hook = QuamotionHook()
    app = next(a for a in hook.list_applications() if a["operatingSystem"] == "Android")
    run = hook.start_test_run(app, hook.list_test_packages()[0], "physical-android-8", parameters=parameters)
    hook.close()
    return str(run["testRunId"])


async def first_event(trigger: QuamotionTestRunTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger ended without an event")


def test_trigger_rides_out_transient_failures(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(FLAKY_JOBS)
    trigger = QuamotionTestRunTrigger(run_id, poll_interval=0.2, deadline=time.time() + 60)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "success", event
    assert event["job_count"] == 2
    assert sandbox_conn.counters()["faults_injected"] > 0


def test_trigger_times_out_at_its_deadline_while_the_run_is_unfinished(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(FLAKY_JOBS)
    started = time.time()
    trigger = QuamotionTestRunTrigger(run_id, poll_interval=0.2, deadline=started + 0.6)
    event = asyncio.run(first_event(trigger))
    assert event["status"] == "timeout", event
    assert "did not finish before the deadline" in event["message"]
    assert time.time() - started < 0.6 + GRACE_SECONDS


def test_trigger_honours_its_deadline_while_the_api_keeps_failing(sandbox_conn: Sandbox) -> None:
    """An outage (503 with Retry-After) must not hold the trigger past its deadline in transport retries."""
    run_id = start_run()
    sandbox_conn.set_faults(path=r"/jobs$", status=503, retry_after=5)
    started = time.time()
    trigger = QuamotionTestRunTrigger(run_id, poll_interval=0.5, deadline=started + 2)
    event = asyncio.run(first_event(trigger))
    took = time.time() - started
    assert took < 2 + GRACE_SECONDS, f"the trigger answered {took:.1f} s after starting: {event}"
    assert event["status"] == "timeout", event


def test_sensor_pokes_ride_out_transient_failures(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(FLAKY_JOBS)
    sensor = QuamotionTestRunSensor(task_id="wait", test_run_id=run_id, deferrable=False, poke_interval=0.2)
    deadline = time.monotonic() + 60
    result = sensor.poke({})
    while not result:
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
        result = sensor.poke({})
    assert getattr(result, "is_done", False)
    value = getattr(result, "xcom_value", None)
    assert isinstance(value, dict)
    assert value["test_run_id"] == run_id
    assert sandbox_conn.counters()["faults_injected"] > 0


@pytest.mark.parametrize("parameters", ["", "fail"])
def test_trigger_reports_the_run_outcome_not_the_faults(sandbox_conn: Sandbox, parameters: str) -> None:
    run_id = start_run(parameters)
    sandbox_conn.set_faults(FLAKY_JOBS)
    event = asyncio.run(
        first_event(QuamotionTestRunTrigger(run_id, poll_interval=0.2, deadline=time.time() + 60))
    )
    assert event["status"] == ("failed" if parameters else "success"), event


def test_sensor_poke_treats_an_outage_as_not_yet(sandbox_conn: Sandbox) -> None:
    """Retries exhausted on a transient failure: the poke says "not yet"; the sensor's timeout decides."""
    run_id = "00000000-0000-0000-0000-000000000000"  # the faults answer first (no run added to the sandbox)
    fast = {
        "retry": {"max_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.02, "retry_after_max": 0.05}
    }
    sensor = QuamotionTestRunSensor(
        task_id="wait", test_run_id=run_id, deferrable=False, poke_interval=0.2, hook_params=fast
    )
    for fault in ({"status": 503, "retry_after": 0}, {"status": "drop"}):
        sandbox_conn.set_faults(path=r"/jobs$", **fault)
        assert sensor.poke({}) is False
    sandbox_conn.set_faults(path=r"/jobs$", status=403)
    with pytest.raises(QuamotionError, match="403"):
        sensor.poke({})
    sandbox_conn.clear_faults()
    assert sandbox_conn.counters()["faults_injected"] >= 5
