"""QuamotionTestRunEventTrigger against the sandbox (real TLS): one event per finished run, filters,
saved progress across a restart, replay without a store, outages; and its pure bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from airflow.triggers.base import BaseEventTrigger

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.triggers.quamotion import (
    MAX_SETTLED_RUNS,
    FinishedRuns,
    QuamotionTestRunEventTrigger,
    job_counts,
    run_finished_at,
)
from tests import sandbox_helpers
from tests.sandbox_helpers import FAST_RETRY, start_run

RUNS_PATH = "/project/sandbox/api/testRun"


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox: it creates runs the session sandbox's other users must not see."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``own_sandbox`` as ``quamotion_default``."""
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


class FakeAssetStore:
    """Airflow 3.3's asset state store accessor of one watched Asset, in memory (JSON values)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.loads(json.dumps(value))  # what the store keeps: JSON
        self.writes += 1


def now_iso(offset: float = -1.0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))


def event_trigger(**kwargs: Any) -> QuamotionTestRunEventTrigger:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("hook_settings", {"retry": FAST_RETRY})
    return QuamotionTestRunEventTrigger(**kwargs)


def list_polls(sb: Sandbox) -> int:
    return int(sb.counters().get("by_path", {}).get(RUNS_PATH, 0))


class Watch:
    """A trigger's ``run()`` in a task, collecting its events' payloads until stopped."""

    def __init__(self, trigger: QuamotionTestRunEventTrigger, sb: Sandbox) -> None:
        self.trigger, self.sb = trigger, sb
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async for event in self.trigger.run():
            self.events.append(dict(event.payload))

    def ids(self) -> list[str]:
        return [e["test_run_id"] for e in self.events]

    async def until(self, done: Callable[[], bool], timeout: float = 40.0) -> None:
        """Wait until ``done()`` (the timeout only keeps a broken trigger from hanging the test)."""
        end = time.monotonic() + timeout
        while not done():
            assert self.task is not None
            if self.task.done():
                self.task.result()
                raise AssertionError("the event trigger ended")
            if time.monotonic() > end:
                raise AssertionError(f"not done; events so far: {self.ids()}")
            await asyncio.sleep(0.05)

    async def seen(self, *run_ids: str) -> None:
        await self.until(lambda: set(run_ids) <= set(self.ids()))

    async def polls(self, count: int) -> None:
        """Let the trigger list the runs ``count`` more times."""
        start = list_polls(self.sb)
        await self.until(lambda: list_polls(self.sb) >= start + count)


@contextlib.asynccontextmanager
async def watching(trigger: QuamotionTestRunEventTrigger, sb: Sandbox) -> AsyncIterator[Watch]:
    watch = Watch(trigger, sb)
    watch.task = asyncio.create_task(watch._run())
    try:
        yield watch
    finally:
        watch.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch.task


def wait_finished(run_id: str, timeout: float = 30.0) -> None:
    hook = QuamotionHook()
    end = time.monotonic() + timeout
    while not api.run_state_from_jobs(hook.list_jobs(run_id)).is_terminal:
        assert time.monotonic() < end, f"run {run_id} did not finish"
        time.sleep(0.1)


# --- against the sandbox ---------------------------------------------------------------------------


async def test_one_event_per_finished_run_never_twice(sandbox_conn: Sandbox) -> None:
    since = now_iso()
    passed, failed = start_run(), start_run("please fail")
    async with watching(event_trigger(since=since), sandbox_conn) as watch:
        await watch.seen(passed, failed)
        await watch.polls(3)
    assert watch.ids().count(passed) == 1 and watch.ids().count(failed) == 1, watch.ids()
    by_id = {e["test_run_id"]: e for e in watch.events}
    good, bad = by_id[passed], by_id[failed]
    assert good["state"] == "success" and bad["state"] == "failed"
    assert good["job_counts"] == {"success": good["job_count"]} and good["job_count"] >= 1
    assert bad["job_counts"] == {"failed": bad["job_count"]}
    assert time.strptime(good["finished"], "%Y-%m-%dT%H:%M:%SZ")
    assert good["finished"] >= since
    run = QuamotionHook().get_test_run(passed)
    assert (good["app_id"], good["device_group"], good["scheduled"]) == (
        run["appId"],
        run["deviceGroup"],
        run["scheduled"],
    )
    assert {j["status"] for j in bad["jobs"]} == {"failed"}
    assert len(json.dumps(good)) < 4096  # small: it lands in the asset event's extra


async def test_a_restart_goes_on_from_the_saved_progress(sandbox_conn: Sandbox) -> None:
    store, since = FakeAssetStore(), now_iso()
    first = event_trigger(since=since)
    first.asset_state_store = store  # type: ignore[assignment]
    before = start_run()
    async with watching(first, sandbox_conn) as watch:
        await watch.seen(before)
        await watch.polls(2)  # the progress is saved one poll after the event left
    saved = store.values[first.state_key]
    assert before in saved["settled"]
    assert "secret" not in json.dumps(saved).lower()

    while_down = start_run()  # finishes while no trigger watches
    wait_finished(while_down)

    second = event_trigger(since=since)
    assert second.state_key == first.state_key
    second.asset_state_store = store  # type: ignore[assignment]
    async with watching(second, sandbox_conn) as watch:
        await watch.seen(while_down)
        await watch.polls(2)
    assert watch.ids().count(while_down) == 1
    assert before not in watch.ids()  # settled before the restart: not emitted again


async def test_without_a_store_a_restart_emits_the_lookback_again(
    sandbox_conn: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    since = now_iso()
    run_id = start_run()
    async with watching(event_trigger(since=since), sandbox_conn) as watch:
        await watch.seen(run_id)
    async with watching(event_trigger(since=since), sandbox_conn) as again:
        await again.seen(run_id)  # at least once: the duplicate the docs announce
    assert watch.ids().count(run_id) == 1 and again.ids().count(run_id) == 1
    assert "".join(capsys.readouterr()).count("no asset state store") == 2  # one line per start


async def test_runs_finished_before_since_are_settled_silently(sandbox_conn: Sandbox) -> None:
    old = start_run()
    wait_finished(old)
    time.sleep(2.1)  # `since` has a one-second resolution
    async with watching(event_trigger(since=now_iso(0.0)), sandbox_conn) as watch:
        new = start_run()
        await watch.seen(new)
        await watch.polls(2)
    assert old not in watch.ids()


async def test_without_saved_progress_runs_finished_within_lookback_are_emitted(
    sandbox_conn: Sandbox,
) -> None:
    done = start_run()
    wait_finished(done)
    async with watching(event_trigger(lookback=300), sandbox_conn) as watch:
        await watch.seen(done)


@pytest.mark.parametrize("states", ["failed", ["failed"]])
async def test_the_state_filter(sandbox_conn: Sandbox, states: Any) -> None:
    since = now_iso()
    passed, failed = start_run(), start_run("fail")
    async with watching(event_trigger(since=since, states=states), sandbox_conn) as watch:
        await watch.seen(failed)
        wait_finished(passed)
        await watch.polls(2)
    assert passed not in watch.ids()


async def test_the_app_and_device_group_filters(sandbox_conn: Sandbox) -> None:
    since = now_iso()
    run_id = start_run()
    run = QuamotionHook().get_test_run(run_id)
    group = next(g for g in QuamotionHook().list_device_groups() if g["deviceGroupId"] == run["deviceGroup"])
    matching = [
        event_trigger(since=since, app=run["appId"]),
        event_trigger(since=since, device_group=group["name"]),
        event_trigger(since=since, device_group=str(group["deviceGroupId"]).upper()),
    ]
    other = [
        event_trigger(since=since, app="no.such.app"),
        event_trigger(since=since, device_group="no-such-group"),
    ]
    watches = [Watch(t, sandbox_conn) for t in matching + other]
    for w in watches:
        w.task = asyncio.create_task(w._run())
    try:
        for w in watches[: len(matching)]:
            await w.seen(run_id)
        await watches[-1].polls(2)
    finally:
        for w in watches:
            assert w.task is not None
            w.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.task
    assert all(run_id not in w.ids() for w in watches[len(matching) :])


async def test_an_outage_is_ridden_out(sandbox_conn: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    since = now_iso()
    run_id = start_run()
    sandbox_conn.set_faults(path=r"/testRun$", sequence=["drop"] * 8)
    async with watching(event_trigger(since=since), sandbox_conn) as watch:
        await watch.seen(run_id)
    assert sandbox_conn.counters()["faults_injected"] == 8
    assert "Listing the test runs failed after the transport's retries" in "".join(capsys.readouterr())


async def test_event_triggers_share_one_token(sandbox_conn: Sandbox) -> None:
    since = now_iso()
    run_id = start_run()
    tokens_before = sandbox_conn.counters()["tokens_issued"]
    watches = [Watch(event_trigger(since=since, states=s), sandbox_conn) for s in ("success", "failed", None)]
    for w in watches:
        w.task = asyncio.create_task(w._run())
    try:
        await watches[0].seen(run_id)
        await watches[2].seen(run_id)
    finally:
        for w in watches:
            assert w.task is not None
            w.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w.task
    assert sandbox_conn.counters()["tokens_issued"] - tokens_before <= 1


# --- serialization and arguments -------------------------------------------------------------------


def test_serialize_is_stable_settings_only_and_an_event_trigger() -> None:
    kwargs: dict[str, Any] = {
        "quamotion_conn_id": "qc",
        "poll_interval": 30.0,
        "app": "demo.app",
        "device_group": "phones",
        "states": ["failed"],
        "since": "2026-12-01T00:00:00Z",
        "lookback": 3600.0,
        "hook_settings": {"timeout": 10},
        "max_concurrency": 4,
    }
    trigger = QuamotionTestRunEventTrigger(**kwargs)
    classpath, serialized = trigger.serialize()
    assert isinstance(trigger, BaseEventTrigger)
    assert serialized == kwargs
    again = QuamotionTestRunEventTrigger(**serialized)
    assert again.serialize() == (classpath, serialized)
    assert BaseEventTrigger.hash(classpath, serialized) == BaseEventTrigger.hash(*again.serialize())
    assert again.state_key == trigger.state_key
    assert QuamotionTestRunEventTrigger(**{**kwargs, "app": "other"}).state_key != trigger.state_key


@pytest.mark.parametrize(
    "kwargs",
    [
        {"states": "queued"},
        {"states": []},
        {"lookback": 0},
        {"max_concurrency": 0},
        {"poll_interval": 0},
        {"since": "yesterday"},
        {"hook_settings": {"client_secret": "x"}},
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any]) -> None:
    with pytest.raises(QuamotionConfigError):
        QuamotionTestRunEventTrigger(**kwargs)


# --- the bookkeeping ------------------------------------------------------------------------------


def job(job_id: int, name: str, status: str, started: str | None, duration: float | None) -> dict[str, Any]:
    return {"id": job_id, "name": name, "status": status, "started": started, "duration": duration}


def test_a_run_finishes_with_its_last_latest_attempt() -> None:
    jobs = [
        job(1, "a", "canceled", "2026-01-01T00:00:00Z", 500.0),  # an earlier attempt: ignored
        job(2, "a", "success", "2026-01-01T00:01:00Z", 30.0),
        job(3, "b", "failed", "2026-01-01T00:00:30Z", 45.0),
    ]
    assert run_finished_at(jobs) == pytest.approx(
        time.mktime((2026, 1, 1, 0, 1, 30, 0, 0, 0)) - time.timezone
    )
    assert run_finished_at([job(1, "a", "success", None, None)]) is None
    assert job_counts(jobs) == {"failed": 1, "success": 1}


def book(**kwargs: Any) -> FinishedRuns:
    kwargs.setdefault("since", None)
    kwargs.setdefault("lookback", 3600.0)
    kwargs.setdefault("states", frozenset({"success", "failed"}))
    return FinishedRuns(**kwargs)


def run_record(run_id: str, scheduled: float, **fields: Any) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(scheduled))
    return {"testRunId": run_id, "scheduled": when, "appId": "app", "deviceGroup": "G1", **fields}


def test_the_baseline_replays_lookback_then_emits_every_finish() -> None:
    now = 1_800_000_000.0
    b = book()
    b.start(None, now)
    ended_long_ago = [
        job(1, "a", "success", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 7200)), 1.0)
    ]
    ended_recently = [job(2, "a", "success", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)), 1.0)]
    assert b.finished("old", run_record("old", now - 1000), ended_long_ago, now) is None
    assert b.finished("recent", run_record("recent", now - 100), ended_recently, now) is not None
    b.end_of_baseline()
    late = b.finished("late", run_record("late", now - 500), ended_long_ago, now)
    assert late is not None  # after the baseline a finish is emitted whatever its reported time
    assert {"old", "recent", "late"} <= set(b.settled)
    assert [r for r, _ in b.candidates([run_record("old", now - 10), run_record("new", now - 10)], now)] == [
        "new"
    ]


def test_candidates_follow_the_filters_and_the_lookback() -> None:
    now = 1_800_000_000.0
    b = book(app="app", device_groups=frozenset({"g1"}))
    b.start(None, now)
    runs = [
        run_record("in", now - 10),
        run_record("too-old", now - 7200),
        run_record("other-app", now - 10, appId="x"),
        run_record("other-group", now - 10, deviceGroup="G2"),
        {"testRunId": "no-date", "appId": "app", "deviceGroup": "g1"},
        "not a run",
    ]
    assert [r for r, _ in b.candidates(runs, now)] == ["in", "no-date"]


def test_saved_progress_is_pruned_and_bounded() -> None:
    now = 1_800_000_000.0
    b = book(lookback=100.0)
    b.start({"settled": {"kept": now - 50, "dropped": now - 1000, "undated": None}}, now)
    assert b.replay_from is None
    assert set(b.snapshot(now)["settled"]) == {"kept", "undated"}
    b.settled = {f"r{i}": now - i / 1000 for i in range(MAX_SETTLED_RUNS + 10)}
    kept = b.snapshot(now)["settled"]
    assert len(kept) == MAX_SETTLED_RUNS and "r0" in kept and f"r{MAX_SETTLED_RUNS + 9}" not in kept


def test_an_offsetless_scheduled_is_read_in_the_connections_zone() -> None:
    from zoneinfo import ZoneInfo

    now = time.mktime((2026, 1, 1, 1, 40, 0, 0, 0, 0)) - time.timezone  # 01:40Z
    run = {"testRunId": "r", "scheduled": "2026-01-01T01:30:00", "appId": "app", "deviceGroup": "g"}
    utc, paris = book(), book(naive_tz=ZoneInfo("Europe/Paris"))
    assert [r for r, _ in utc.candidates([run], now)] == ["r"]  # 01:30Z: within the hour
    assert paris.candidates([run], now) == []  # 01:30 in Paris is 00:30Z: older than the lookback
