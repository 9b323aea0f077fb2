"""Job logs in waits (:mod:`airflow_provider_quamotion.logs`): lines once, in order, within a budget.

Fake hooks replay a job's live log from its start on every request, as the service's
``log/live`` does (and the sandbox's): a follower must show each line once however often it
reconnects, stop at its budget with one "truncated" line, and never fail the wait.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from airflow_provider_quamotion import logs
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionTimeoutError
from airflow_provider_quamotion.logs import JobLogFollower, LineSplitter, check_log_budget

LOGGER = logging.getLogger("tests.job_logs")


class ReplayingHook:
    """``stream_job_log`` that yields the lines written so far, from the start, then stops."""

    def __init__(self, written: dict[str, list[str]], *, end: bool = True) -> None:
        self.written = written
        self.end = end
        self.calls: list[tuple[str, int, float | None]] = []

    def stream_job_log(self, job_id: str, *, max_bytes: int, deadline: float | None = None) -> Iterator[str]:
        self.calls.append((job_id, max_bytes, deadline))
        read = 0
        for line in self.written.get(job_id, []):
            room = max_bytes - read
            read += len(line.encode()) + 1
            if read > max_bytes:  # cut at the budget: the last partial line comes cut, as the hook's
                if room > 0:
                    yield line.encode()[:room].decode()
                return
            yield line
        if not self.end:  # the job still runs: the stream stays open until the deadline
            while deadline is not None and time.time() < deadline:
                time.sleep(0.01)
            raise QuamotionTimeoutError("the reply's body was still arriving at the deadline")


class AsyncReplayingHook(ReplayingHook):
    async def stream_job_log(  # type: ignore[override]
        self, job_id: str, *, max_bytes: int, deadline: float | None = None
    ) -> AsyncIterator[str]:
        for line in super().stream_job_log(job_id, max_bytes=max_bytes, deadline=deadline):
            yield line


class Store:
    """A task state store (``get``/``set``/``delete``)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def running(*ids: int, status: str = "running") -> list[dict[str, Any]]:
    return [{"id": i, "name": f"device-{i}", "status": status} for i in ids]


def shown(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER.name and r.levelno == logging.INFO]


def soon() -> float:
    """A short interval: a fake stream of a running job stays open until it ends."""
    return time.time() + 0.2


def test_line_splitter_joins_chunks_and_keeps_the_last_unterminated_line() -> None:
    split = LineSplitter()
    assert split.feed(b"Scen") == []
    assert split.feed(b"ario 1\r\nScenario 2\nJob fin") == ["Scenario 1", "Scenario 2"]
    assert split.feed("ished: é".encode()) == []
    assert split.end() == ["Job finished: é"] and split.end() == []
    assert LineSplitter().feed(b"\xff\n") == ["\ufffd"]


@pytest.mark.parametrize("bad", [-1, 1.5, "1MB", True, None])
def test_log_budget_is_a_whole_number_of_bytes(bad: Any) -> None:
    with pytest.raises(QuamotionConfigError, match="log_budget_bytes=.*follow_logs=False"):
        check_log_budget(bad)
    assert check_log_budget(0) == 0


def test_lines_show_once_in_order_across_reconnections(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    written = {"7": ["start", "Scenario 1/3: passed"]}
    hook = ReplayingHook(written, end=False)
    follower = JobLogFollower(LOGGER)
    follower.follow(hook, running(7), soon())
    written["7"] += ["Scenario 2/3: passed"]
    follower.follow(hook, running(7), soon())
    written["7"] += ["Scenario 3/3: passed", "Job finished: success"]
    hook.end = True
    follower.follow(hook, running(7, status="success"), soon())
    assert shown(caplog) == [
        "[job 7] start",
        "[job 7] Scenario 1/3: passed",
        "[job 7] Scenario 2/3: passed",
        "[job 7] Scenario 3/3: passed",
        "[job 7] Job finished: success",
    ]
    assert follower.done == {"7"} and follower.summary() == {"lines": 5, "bytes": 91, "truncated": False}
    follower.follow(hook, running(7, status="success"), soon())  # ended: not requested again
    assert len(hook.calls) == 3


def test_the_budget_ends_with_one_truncated_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    hook = ReplayingHook({"1": [f"line {n:03d}" for n in range(50)], "2": [f"other {n}" for n in range(50)]})
    follower = JobLogFollower(LOGGER, budget_bytes=100)
    follower.follow(hook, running(1, 2), soon())
    follower.follow(hook, running(1, 2), soon())
    lines = shown(caplog)
    assert sum(len(m.split("] ", 1)[1]) + 1 for m in lines) <= 100
    assert 0 < len(lines) < 20
    truncated = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(truncated) == 1 and "100 bytes" in truncated[0].getMessage()
    assert truncated[0].levelno == logging.WARNING
    assert follower.truncated and follower.pending(running(1, 2)) == []
    assert all(cap <= 101 + 50 for _, cap, _ in hook.calls)  # each stream is bounded by the budget


def test_switched_off_nothing_is_requested(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    hook = ReplayingHook({"1": ["a"]})
    follower = JobLogFollower(LOGGER, enabled=False)
    follower.follow(hook, running(1), soon())
    assert follower.follow_for(hook, running(1), 0.0) == 0.0
    assert hook.calls == [] and shown(caplog) == []


def test_which_jobs_are_followed() -> None:
    follower = JobLogFollower(LOGGER)
    jobs = [
        {"id": 1, "name": "a", "status": "success"},
        {"id": 2, "name": "b", "status": "created"},
        {"id": 3, "name": "c", "status": "running"},
        {"id": 4, "name": "d", "status": "skipped"},
        {"id": 5, "name": "a", "status": "canceled", "started": "2018-03-16T13:16:57Z"},
        {"id": 6, "name": "e", "status": "canceling"},
    ]
    # unfinished first; no log for created or skipped; a retried job's latest attempt only
    assert follower.pending(jobs) == ["3", "6", "1"]
    many = running(*range(20))
    assert len(follower.pending(many)) == logs.MAX_FOLLOWED_JOBS


def test_a_failing_stream_warns_once_and_never_fails_the_wait(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        calls = 0

        def stream_job_log(self, job_id: str, **_: Any) -> Iterator[str]:
            Broken.calls += 1
            raise ValueError("boom")
            yield ""  # a generator

    follower = JobLogFollower(LOGGER)
    follower.follow(Broken(), running(1), soon())
    follower.follow(Broken(), running(1), soon())
    warnings = [r for r in caplog.records if "Cannot follow the live log of job 1" in r.getMessage()]
    assert Broken.calls == 2 and len(warnings) == 1


def test_follow_stops_at_until() -> None:
    class Endless:
        def stream_job_log(
            self, job_id: str, *, max_bytes: int, deadline: float | None = None
        ) -> Iterator[str]:
            assert deadline is not None
            while time.time() < deadline:
                time.sleep(0.01)
                yield "tick"
            raise QuamotionTimeoutError("at the deadline")

    follower = JobLogFollower(LOGGER)
    until = time.time() + 0.2
    follower.follow(Endless(), running(1), until)
    assert follower.lines > 0 and "1" not in follower.done


def test_a_reschedule_sensor_keeps_its_counts_in_the_state_store(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    store = Store()
    hook = ReplayingHook({"1": ["a", "b"]}, end=False)
    JobLogFollower(LOGGER, store=store).follow(hook, running(1), soon())
    assert store.data[logs.STATE_KEY]["shown"] == {"1": 2}
    hook.written["1"].append("c")
    again = JobLogFollower(LOGGER, store=store)  # the next poke: a new sensor object
    again.follow(hook, running(1), soon())
    assert shown(caplog) == ["[job 1] a", "[job 1] b", "[job 1] c"]
    hook.end = True
    again.finish(hook, running(1, status="success"))
    assert logs.STATE_KEY not in store.data  # a cleared, re-run task starts afresh


async def test_async_follow_shows_new_lines_and_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    written = {"1": ["a", "b"], "2": ["x"]}
    hook = AsyncReplayingHook(written, end=False)
    follower = JobLogFollower(LOGGER, budget_bytes=10)
    left = await follower.afollow_for(hook, running(1, 2), 0.5)
    assert 0.0 <= left <= 0.5
    written["1"] += ["c"]
    hook.end = True
    await follower.afinish(hook, running(1, 2, status="success"))
    assert sorted(shown(caplog)) == ["[job 1] a", "[job 1] b", "[job 1] c", "[job 2] x"]
    assert follower.done == {"1", "2"} and follower.used == 8
    written["3"] = ["0123456789"]
    await follower.afollow(hook, running(3), soon())
    assert follower.truncated and follower.summary()["lines"] == 4


async def test_a_busy_triggerer_skips_an_interval_but_the_end_waits_for_a_slot(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, LOGGER.name)
    monkeypatch.setattr(logs, "MAX_ASYNC_STREAMS", 1)
    hook = AsyncReplayingHook({"1": ["a"]})
    slots, drains = logs._slots("follow"), logs._slots("drain")
    await slots.acquire()  # another trigger's stream holds the only follow slot
    await drains.acquire()  # and another trigger's end the only drain slot
    follower = JobLogFollower(LOGGER)
    await follower.afollow(hook, running(1), time.time() + 5)
    assert hook.calls == []  # skipped at once, nothing requested

    async def release_soon() -> None:
        await asyncio.sleep(0.05)
        drains.release()

    releasing = asyncio.create_task(release_soon())
    await follower.afinish(hook, running(1, status="success"))
    await releasing
    assert shown(caplog) == ["[job 1] a"] and follower.done == {"1"}
    assert slots.locked()  # the end of the wait took a drain slot, not the follow slot
