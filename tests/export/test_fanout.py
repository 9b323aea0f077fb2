"""The ``jobs`` fan-out against the sandbox: one slow request does not stall the others, and a failed
export stops its requests (none is sent after ``execute`` has raised).

Both tests check the order of events (client-side logs of requests), never wall times.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from airflow_provider_quamotion.exceptions import QuamotionApiError
from airflow_provider_quamotion.export import source
from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
from airflow_provider_quamotion.sandbox import Sandbox
from tests.export.test_sandbox import expected_jobs, window_of

pytestmark = pytest.mark.integration

WORKER_PREFIX = "quamotion-export"


def export_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(WORKER_PREFIX)]


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> None:
    """Workers of an earlier test would confuse the thread checks here."""
    for thread in export_workers():
        thread.join(10)


def export_jobs_in_order(sb: Any, tmp_path: Path, since: Any, until: Any, concurrency: int) -> None:
    """Export the window's jobs with ``concurrency`` workers; every job is there, in run order."""
    target = tmp_path / "jobs.jsonl"
    summary = QuamotionExportOperator(
        task_id="t",
        resource="jobs",
        destination=str(target),
        since=since,
        until=until,
        max_concurrency=concurrency,
    ).execute({})
    expected = expected_jobs(sb, since, until)
    assert summary["rows"] == len(expected)
    assert [json.loads(line) for line in target.read_text().splitlines()] == expected  # run order kept


def test_one_slow_run_does_not_hold_the_others_up(
    sandbox_conn: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_conn
    concurrency = 2
    since, until = window_of(sb, 0, 120)
    # the newest run of the window: the head of the output order (the sandbox lists newest first)
    slow = next(iter(sb.expected_test_runs(since, until)))["testRunId"]
    sb.set_faults(path=f"{slow}/jobs$", latency_ms=2000)

    events: list[tuple[str, str]] = []
    original = QuamotionAsyncHook.list_jobs

    async def logged(self: QuamotionAsyncHook, run_id: str, **kwargs: Any) -> list[dict[str, Any]]:
        events.append(("start", run_id))  # on the fan-out's event loop: one thread
        try:
            return await original(self, run_id, **kwargs)
        finally:
            events.append(("end", run_id))

    monkeypatch.setattr(QuamotionAsyncHook, "list_jobs", logged)
    export_jobs_in_order(sb, tmp_path, since, until, concurrency)
    begin, end = events.index(("start", slow)), events.index(("end", slow))
    done_meanwhile = [rid for kind, rid in events[begin:end] if kind == "end" and rid != slow]
    # Before: at most 2 x concurrency runs were in flight, so the slow head blocked all but
    # 2 x concurrency - 1 others. Now the look-ahead window lets the other worker go on.
    assert len(done_meanwhile) > 2 * concurrency
    assert len(done_meanwhile) >= source.IN_FLIGHT_PER_WORKER * concurrency // 2
    assert sb.counters()["faults_injected"] == 0  # latency only: every request answered first time


def test_a_failed_export_stops_its_requests(
    sandbox_conn: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sb = sandbox_conn
    broken = QuamotionHook().list_test_runs()[0]["testRunId"]  # the head of the list (newest first)
    # The first listed run's jobs fail for good (404: no retry) after 300 ms; every other run's jobs answer
    # 503 at once, so the other workers are in the middle of their retries (50 attempts, 50 ms apart) when
    # it fails, however the machine schedules the first sends.
    sb.set_faults(
        {
            "rules": [
                {"path": f"{broken}/jobs$", "status": 404, "latency_ms": 300},
                {"path": r"/jobs$", "status": 503, "retry_after": 1},
            ]
        }
    )
    sends: list[str] = []  # the URL of every job-list request the fan-out sent, in order
    lock = threading.Lock()
    original_request = aiohttp.ClientSession.request

    async def logged_request(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        with lock:
            sends.append(str(url))
        return await original_request(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "request", logged_request)
    retry = {"max_attempts": 50, "backoff_initial": 0.05, "backoff_max": 0.05, "retry_after_max": 0.05}
    target = tmp_path / "jobs.jsonl"
    operator = QuamotionExportOperator(
        task_id="t",
        resource="jobs",
        destination=str(target),
        max_concurrency=4,
        hook_params={"retry": retry},
    )
    with pytest.raises(QuamotionApiError, match="404"):
        operator.execute({})
    with lock:
        raised_at = len(sends)
    # the fan-out's event loop and its thread have stopped before execute() raised
    assert [t.name for t in export_workers()] == []
    requests_before = sb.counters()["requests"]
    threading.Event().wait(0.3)  # several 50 ms retry waits: a request still retrying would be sent now
    late = sends[raised_at:]
    assert late == [], f"{len(late)} requests were sent after the export had failed"
    assert sb.counters()["requests"] == requests_before
    assert not target.exists()
    # the other requests really were retrying when the export failed
    assert sb.counters()["status"].get("503", 0) >= 3
    # and none had run out of its 50 attempts: the failure, not the retry budget, stopped them
    assert max(Counter(sends).values()) < 50


def test_a_request_waiting_on_a_retry_gives_its_slot_to_the_others(
    sandbox_conn: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``max_concurrency`` bounds the requests on the wire, not the waits: while one run's request
    waits out a ``Retry-After``, both slots keep serving other runs, and never more than two are sent
    at once."""
    sb = sandbox_conn
    concurrency = 2
    since, until = window_of(sb, 0, 120)
    slow = next(iter(sb.expected_test_runs(since, until)))["testRunId"]
    sb.set_faults(
        {
            "rules": [
                {"path": f"{slow}/jobs$", "sequence": [503], "retry_after": 1},
                {"path": r"/jobs$", "latency_ms": 20},
            ]
        }
    )
    on_wire = 0  # requests sent and not answered yet (all on the fan-out's one event loop)
    most = 0
    overlapping_during_wait = 0
    waiting = False
    original_request = aiohttp.ClientSession.request

    async def counted_request(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        nonlocal on_wire, most, overlapping_during_wait, waiting
        mine = str(url).endswith(f"{slow}/jobs")
        if mine and waiting:
            waiting = False  # the retry: the wait is over
        on_wire += 1
        most = max(most, on_wire)
        if waiting and on_wire == concurrency:
            overlapping_during_wait += 1
        try:
            response = await original_request(self, method, url, **kwargs)
        finally:
            on_wire -= 1
        if mine and response.status == 503:
            waiting = True  # from now until the retry, this run's request waits without a slot
        return response

    monkeypatch.setattr(aiohttp.ClientSession, "request", counted_request)
    export_jobs_in_order(sb, tmp_path, since, until, concurrency)
    assert sb.counters()["status"].get("503") == 1
    assert most <= concurrency  # never more requests on the wire than max_concurrency
    assert overlapping_during_wait > 0  # both slots were busy with other runs during the wait
