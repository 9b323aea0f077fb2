"""Live job logs in waits, against the sandbox (whose ``log/live`` grows while a job runs).

The test-run sensor's pokes, the start operator's worker wait and the test-run trigger each show
the jobs' log lines in their log as the jobs write them, once each, bounded by ``log_budget_bytes``
(one "truncated" line), and not at all with ``follow_logs=False``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_quamotion.compat import AirflowFailException
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.operators.test_run import QuamotionStartTestRunOperator
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.sensors.quamotion import QuamotionTestRunSensor
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger
from tests import sandbox_helpers
from tests.sandbox_helpers import FAST_RETRY, start_run

pytestmark = pytest.mark.integration

LINE = re.compile(r"^\[job (\d+)\] (.*)$")
#: Stands in for the task's logger (Airflow's is structlog's, which caplog does not see).
TASK_LOG = logging.getLogger("tests.task_log")


def into_caplog(task: Any) -> Any:
    """Route ``task.log`` (an operator's, a sensor's, a trigger's) to :data:`TASK_LOG`."""
    task._cached_logger = TASK_LOG  # operators and sensors (airflow.sdk DAG nodes)
    task._log = TASK_LOG  # triggers (LoggingMixin)
    if hasattr(task, "_logs") and hasattr(task._logs, "logger"):
        task._logs.logger = TASK_LOG  # a trigger's follower, made with its logger
    return task


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of this module's own: it creates runs the session sandbox's users must not see."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


def job_lines(caplog: pytest.LogCaptureFixture) -> dict[str, list[str]]:
    """The job log lines a wait wrote, per job id, in order (with when each was written)."""
    out: dict[str, list[str]] = {}
    for record in caplog.records:
        match = LINE.match(record.getMessage())
        if match:
            out.setdefault(match.group(1), []).append(match.group(2))
    return out


def whole_logs(run_id: str) -> dict[str, list[str]]:
    hook = QuamotionHook()
    return {str(j["id"]): hook.get_job_log(j["id"]).splitlines() for j in hook.list_jobs(run_id)}


def truncations(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("Job logs truncated")]


def poke_until_done(sensor: QuamotionTestRunSensor) -> Any:
    deadline = time.monotonic() + 60
    result = sensor.poke({})
    while not result:
        assert time.monotonic() < deadline, "the run never finished"
        result = sensor.poke({})
    return result


def test_sensor_pokes_show_every_job_log_line_once(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run()
    sensor = QuamotionTestRunSensor(task_id="wait", test_run_id=run_id, poke_interval=0.2, deferrable=False)
    poke_until_done(into_caplog(sensor))
    shown = job_lines(caplog)
    assert shown == whole_logs(run_id)  # each job's whole log, each line once, in order
    assert all(lines[-1] == "Job finished: success" for lines in shown.values())
    # lines came while the jobs ran: some were shown before the poke that saw the run finished
    finished_at = next(i for i, r in enumerate(caplog.records) if "is success" in r.getMessage())
    assert any(LINE.match(r.getMessage()) for r in caplog.records[:finished_at])
    assert not truncations(caplog)


def test_sensor_with_follow_logs_off_shows_none(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run()
    sensor = QuamotionTestRunSensor(
        task_id="wait", test_run_id=run_id, poke_interval=0.2, deferrable=False, follow_logs=False
    )
    poke_until_done(into_caplog(sensor))
    assert job_lines(caplog) == {}
    assert "/log/live" not in str(sandbox_conn.counters()["by_path"])


def waiting_operator(**kwargs: Any) -> QuamotionStartTestRunOperator:
    """A start operator that waits in the worker, its log routed to caplog (its wait is what runs)."""
    op = QuamotionStartTestRunOperator(
        task_id="start",
        app="x",
        test_package="y",
        device_group="z",
        wait_for_completion=True,
        poke_interval=0.2,
        timeout=60,
        **kwargs,
    )
    return into_caplog(op)


def test_operator_wait_shows_the_lines_within_its_budget(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run()
    assert waiting_operator(log_budget_bytes=150).wait_in_worker({}, QuamotionHook(), run_id) == run_id
    shown = job_lines(caplog)
    whole = whole_logs(run_id)
    assert shown and sum(len(line.encode()) + 1 for lines in shown.values() for line in lines) <= 150
    for job_id, lines in shown.items():
        assert lines == whole[job_id][: len(lines)]  # a prefix of the job's log, in order
    assert len(truncations(caplog)) == 1 and truncations(caplog)[0].levelno == logging.WARNING


def test_operator_wait_with_a_large_budget_shows_whole_logs(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run("fail")
    with pytest.raises(AirflowFailException, match="did not pass"):
        waiting_operator().wait_in_worker({}, QuamotionHook(), run_id)
    assert job_lines(caplog) == whole_logs(run_id)
    assert any("FAILED: element not found" in line for lines in job_lines(caplog).values() for line in lines)


def test_trigger_writes_the_lines_and_its_event_counts_them(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run()
    trigger = QuamotionTestRunTrigger(
        run_id, poll_interval=0.2, deadline=time.time() + 60, hook_settings={"retry": FAST_RETRY}
    )
    into_caplog(trigger)
    _, kwargs = trigger.serialize()
    assert kwargs["follow_logs"] is True and kwargs["log_budget_bytes"] == 1024 * 1024

    async def first_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first_event(), 60))
    assert event["status"] == "success"
    shown = job_lines(caplog)
    assert shown == whole_logs(run_id)
    lines = sum(len(v) for v in shown.values())
    size = sum(len(line.encode()) + 1 for v in shown.values() for line in v)
    assert event["logs"] == {"lines": lines, "bytes": size, "truncated": False}


def test_trigger_budget_and_switch_travel_in_serialize(
    sandbox_conn: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    run_id = start_run()
    small = QuamotionTestRunTrigger(
        run_id, poll_interval=0.2, deadline=time.time() + 60, log_budget_bytes=150
    )
    off = QuamotionTestRunTrigger(run_id, poll_interval=0.2, deadline=time.time() + 60, follow_logs=False)
    for trigger in (small, off):  # what the triggerer rebuilds from the database
        _, kwargs = trigger.serialize()
        assert QuamotionTestRunTrigger(**kwargs).serialize() == trigger.serialize()

    async def events() -> list[dict[str, Any]]:
        out = []
        for trigger in (
            QuamotionTestRunTrigger(**small.serialize()[1]),
            QuamotionTestRunTrigger(**off.serialize()[1]),
        ):
            into_caplog(trigger)
            async for event in trigger.run():
                out.append(dict(event.payload))
                break
        return out

    budgeted, silent = asyncio.run(asyncio.wait_for(events(), 60))
    assert budgeted["logs"]["truncated"] and 0 < budgeted["logs"]["bytes"] <= 150
    assert silent["logs"] == {"lines": 0, "bytes": 0, "truncated": False}
    assert len(truncations(caplog)) == 1
