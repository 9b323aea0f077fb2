"""Trigger tests with pytest-asyncio against the sandbox: events, deadlines, retries, errors, serialization."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api, compat
from airflow_provider_quamotion.exceptions import (
    QuamotionApiError,
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionNotFoundError,
    QuamotionRateLimitedError,
    QuamotionResponseError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.settings import RetryPolicy
from airflow_provider_quamotion.transport import aio
from airflow_provider_quamotion.triggers import quamotion as triggers_module
from airflow_provider_quamotion.triggers.quamotion import (
    QuamotionHttpTrigger,
    QuamotionTestRunTrigger,
    hook_overrides,
    is_transient_error,
    safe_hook_settings,
)
from tests import sandbox_helpers
from tests.mocks import reset_process_caches
from tests.sandbox_helpers import FAST_RETRY, start_run

#: Waits as in production (Retry-After honoured), for the tests of deadlines under an outage.
SLOW_RETRY = {"max_attempts": 6, "backoff_initial": 0.5, "backoff_max": 30.0}


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox: it creates runs the session sandbox's other users must not see."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``own_sandbox`` as ``quamotion_default`` (overrides the session-wide fixture here)."""
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


async def first_event(trigger: Any, timeout: float = 30) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(run(), timeout)


def run_trigger(test_run_id: str, **kwargs: Any) -> QuamotionTestRunTrigger:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("deadline", time.time() + 20)
    kwargs.setdefault("hook_settings", {"retry": FAST_RETRY})
    return QuamotionTestRunTrigger(test_run_id, **kwargs)


async def test_success_event_is_small_and_complete(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    event = await first_event(run_trigger(run_id))
    assert event["status"] == "success"
    assert event["test_run_id"] == run_id
    assert event["state"] == "success"
    assert event["job_count"] == len(event["jobs"]) > 0
    assert set(event["jobs"][0]) == {"id", "device", "status"}
    assert len(json.dumps(event)) < 4096


async def test_failed_run_yields_failed_event_with_per_job_status(sandbox_conn: Sandbox) -> None:
    run_id = start_run(parameters="please fail")
    event = await first_event(run_trigger(run_id))
    assert event["status"] == "failed"
    assert {j["status"] for j in event["jobs"]} == {"failed"}


async def test_deadline_yields_timeout_event(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    started = time.monotonic()
    event = await first_event(run_trigger(run_id, poll_interval=5, deadline=time.time() + 0.3))
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2  # the sleep is cut at the deadline, not at poll_interval
    assert "deadline" in event["message"]
    assert event["state"] in ("queued", "running")


async def test_deadline_already_passed_with_first_delay(sandbox_conn: Sandbox) -> None:
    event = await first_event(run_trigger("any", first_delay=10, deadline=time.time() - 1))
    assert event["status"] == "timeout"


async def test_transient_errors_are_retried_by_the_transport(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(path=r"/jobs$", sequence=[503, 500, "ok", 503], retry_after=0)
    event = await first_event(run_trigger(run_id))
    assert event["status"] == "success"
    assert sandbox_conn.counters()["faults_injected"] == 3


async def test_permanent_error_yields_error_event_without_secrets(sandbox_conn: Sandbox) -> None:
    sandbox_conn.set_faults(path=r"/jobs$", status=403)
    event = await first_event(run_trigger(start_run()))
    assert event["status"] == "error"
    assert "403" in event["message"]
    text = json.dumps(event)
    assert sandbox_conn.client_secret not in text
    assert QuamotionHook().get_token() not in text


async def test_unknown_run_yields_error_event(sandbox_conn: Sandbox) -> None:
    event = await first_event(run_trigger("no-such-run"))
    assert event["status"] == "error"
    assert "not found" in event["message"]


async def test_event_summary_is_bounded() -> None:
    jobs = [{"id": i, "name": f"d{i}", "status": "success" if i % 2 else "failed"} for i in range(500)]
    summary = api.summarize_jobs(jobs)
    assert len(summary) == api.MAX_SUMMARY_JOBS
    assert all(j["status"] == "failed" for j in summary)  # failed jobs first


async def test_many_triggers_share_one_token(sandbox_conn: Sandbox) -> None:
    reset_process_caches()
    run_ids = [start_run() for _ in range(3)]
    sandbox_conn.reset_counters()
    reset_process_caches()
    triggers = [run_trigger(run_ids[i % 3]) for i in range(50)]
    built: list[Any] = []
    real_init = QuamotionAsyncHook.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)

    QuamotionAsyncHook.__init__ = counting_init  # type: ignore[method-assign]
    try:
        events = await asyncio.gather(*(first_event(t) for t in triggers))
    finally:
        QuamotionAsyncHook.__init__ = real_init  # type: ignore[method-assign]
    assert {e["status"] for e in events} == {"success"}
    assert sandbox_conn.counters()["tokens_issued"] == 1
    assert len(built) == 1  # one hook (one connection pool, one TLS context) for all 50
    assert built[0]._client is None or built[0]._client._session is None  # closed after the last one
    assert not triggers_module._SHARED_HOOKS


async def test_many_triggers_share_one_http_client_one_tls_context_and_one_project_lookup(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started together, 50 triggers read the connection once, build one ``aiohttp.ClientSession`` and
    one SSLContext, and look the project up once (the others wait for that one request)."""
    import ssl

    import aiohttp

    run_ids = [start_run() for _ in range(3)]
    reset_process_caches()
    sandbox_conn.reset_counters()
    monkeypatch.setattr(aio, "_SSL_CONTEXTS", {})
    clients: list[Any] = []
    ca_loads: list[Any] = []
    connection_reads: list[str] = []
    real_client_init = aiohttp.ClientSession.__init__
    real_context = ssl.create_default_context
    real_aget = compat.aget_connection  # the hook's connection read on every Airflow 3 minor

    def counting_client(self: Any, *args: Any, **kwargs: Any) -> None:
        clients.append(self)
        real_client_init(self, *args, **kwargs)

    def counting_context(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        ca_loads.append(kwargs.get("cafile"))
        return real_context(*args, **kwargs)

    async def counting_aget(hook: Any, conn_id: str) -> Any:
        connection_reads.append(conn_id)
        return await real_aget(hook, conn_id)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", counting_client)
    monkeypatch.setattr(ssl, "create_default_context", counting_context)
    monkeypatch.setattr(compat, "aget_connection", counting_aget)
    triggers = [run_trigger(run_ids[i % 3]) for i in range(50)]
    events = await asyncio.gather(*(first_event(t) for t in triggers))
    assert {e["status"] for e in events} == {"success"}
    assert len(connection_reads) == 1
    assert len(clients) == 1
    assert len(ca_loads) == 1
    counters = sandbox_conn.counters()
    assert counters["by_path"].get("/api/project", 0) == 1
    assert counters["tokens_issued"] == 1
    assert clients[0].closed  # the last trigger closed the shared pool
    assert not aio._POOLS.get(asyncio.get_running_loop())
    assert not triggers_module._SHARED_HOOKS


async def test_a_failed_project_lookup_is_shared_then_tried_again(sandbox_conn: Sandbox) -> None:
    reset_process_caches()
    sandbox_conn.set_faults(path=r"^/api/project$", status=403)
    hooks = [QuamotionAsyncHook(retry=FAST_RETRY) for _ in range(10)]
    try:
        results = await asyncio.gather(*(h.list_jobs("x") for h in hooks), return_exceptions=True)
        assert all(isinstance(r, QuamotionAuthError) for r in results), results
        assert sandbox_conn.counters()["by_path"].get("/api/project", 0) == 1
        sandbox_conn.clear_faults()
        run_id = start_run()
        assert isinstance(await hooks[0].list_jobs(run_id), list)
    finally:
        for h in hooks:
            await h.aclose()


def test_first_polls_of_triggers_started_together_are_paced() -> None:
    entry = triggers_module._Shared(hook=None, created=0.0)  # type: ignore[arg-type]
    waits = [entry.first_poll_wait(poll_interval=2.0) for _ in range(10_000)]
    assert waits[0] == 0.0  # a trigger alone polls at once
    assert max(waits) < 2.0  # never a poll interval or more
    for n in (100, 1000, 10_000):  # the first n are spread evenly over the interval, whatever n
        gaps = [b - a for a, b in zip(sorted(waits[:n]), sorted(waits[:n])[1:], strict=False)]
        assert max(gaps) <= 3 * 2.0 / n
    capped = [entry.first_poll_wait(poll_interval=0.1) for _ in range(10)]
    assert max(capped) < 0.1


# --- failures: transient ones are "not yet", permanent ones end the wait -------------------------------


@pytest.mark.parametrize(
    "fault",
    [{"status": 503, "retry_after": 5}, {"status": "drop"}, {"status": 429, "retry_after": 0}],
    ids=["503-retry-after", "dropped", "429"],
)
async def test_an_outage_ends_in_a_timeout_event_at_the_deadline(sandbox_conn: Sandbox, fault: Any) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(path=r"/jobs$", **fault)
    started = time.time()
    event = await first_event(
        run_trigger(run_id, poll_interval=0.2, deadline=started + 1.5, hook_settings={"retry": SLOW_RETRY})
    )
    took = time.time() - started
    assert event["status"] == "timeout", event
    assert 1.4 <= took < 1.5 + 1.0, took
    assert "The last poll failed" in event["message"]
    assert sandbox_conn.counters()["faults_injected"] >= 2  # it kept polling through the outage


async def test_polling_resumes_after_an_outage(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    sandbox_conn.set_faults(path=r"/jobs$", sequence=["drop"] * 12)
    event = await first_event(run_trigger(run_id))
    assert event["status"] == "success", event
    assert sandbox_conn.counters()["faults_injected"] == 12


@pytest.mark.parametrize("status", [400, 401, 403])
async def test_permanent_statuses_end_in_an_error_event(sandbox_conn: Sandbox, status: int) -> None:
    sandbox_conn.set_faults(path=r"/jobs$", status=status)
    started = time.time()
    event = await first_event(run_trigger(start_run(), deadline=started + 20))
    assert event["status"] == "error", event
    assert str(status) in event["message"]
    assert time.time() - started < 5


async def test_the_async_transport_keeps_its_retries_within_a_deadline(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    hook = QuamotionAsyncHook()  # the default policy: 6 attempts, Retry-After honoured up to 300 s
    try:
        await hook.list_jobs(run_id)  # the project and the token, looked up before the outage
        sandbox_conn.set_faults(path=r"/jobs$", status=503, retry_after=5)
        started = time.time()
        with pytest.raises(QuamotionApiError, match="503") as err:
            await hook.list_jobs(run_id, deadline=started + 1)
        assert time.time() - started < 1.0  # a 5 s wait would pass the deadline: no retry at all
        assert is_transient_error(err.value)
        sandbox_conn.set_faults(path=r"/jobs$", status=503, retry_after=1)
        sandbox_conn.reset_counters()
        started = time.time()
        with pytest.raises(QuamotionApiError, match="503"):
            await hook.list_jobs(run_id, deadline=started + 2.5)
        assert time.time() - started < 2.5 + 0.5
        assert sandbox_conn.counters()["faults_injected"] == 3  # retried while a wait fitted: at 0, 1, 2 s
        with pytest.raises(QuamotionTimeoutError):
            await hook.list_jobs(run_id, deadline=time.time() - 1)
        sandbox_conn.set_faults(path=r"/jobs$", latency_ms=3000)
        started = time.time()
        # the read timeout is the time left: the deadline's timeout, not a server too slow for `timeout`
        with pytest.raises(QuamotionTimeoutError, match="deadline passed while waiting for the reply"):
            await hook.list_jobs(run_id, deadline=started + 0.5)
        assert time.time() - started < 0.5 + 0.5
    finally:
        await hook.aclose()


async def test_http_trigger_rides_out_an_outage_until_its_deadline(sandbox_conn: Sandbox) -> None:
    sandbox_conn.set_faults(path=r"deviceGroup$", status=502, retry_after=0)
    event = await first_event(http_trigger("deviceGroup", deadline=time.time() + 0.8))
    assert event["status"] == "timeout", event
    assert "502" in event["message"]
    sandbox_conn.set_faults(path=r"deviceGroup$", status=400)
    event = await first_event(http_trigger("deviceGroup"))
    assert event["status"] == "error", event


def test_transient_and_permanent_errors() -> None:
    assert is_transient_error(QuamotionApiError("x", status=503))
    assert is_transient_error(QuamotionApiError("x", status=502))
    assert is_transient_error(QuamotionRateLimitedError("x", status=429))
    assert is_transient_error(QuamotionApiError("ReadTimeout", status=None))
    assert is_transient_error(QuamotionTimeoutError("deadline"))
    assert not is_transient_error(QuamotionApiError("x", status=503), retry_statuses={429})
    assert not is_transient_error(QuamotionApiError("x", status=400))
    assert not is_transient_error(QuamotionApiError("x", status=501))
    assert not is_transient_error(QuamotionNotFoundError("x", status=404))
    assert not is_transient_error(QuamotionAuthError("x"))
    assert is_transient_error(QuamotionAuthError("Azure AD unavailable", transient=True))
    assert not is_transient_error(QuamotionConfigError("x"))
    assert not is_transient_error(QuamotionResponseError("not JSON", status=200))
    assert not is_transient_error(_certificate_failure())


def _certificate_failure() -> QuamotionApiError:
    try:
        raise ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    except ssl.SSLError as exc:
        error = QuamotionApiError("GET /x failed (ConnectError)")
        error.__cause__ = exc
        return error


# --- the HTTP trigger ----------------------------------------------------------------------------


def http_trigger(endpoint: str, **kwargs: Any) -> QuamotionHttpTrigger:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("deadline", time.time() + 10)
    kwargs.setdefault("hook_settings", {"retry": FAST_RETRY})
    return QuamotionHttpTrigger(endpoint, **kwargs)


def has_jobs(body: Any) -> bool:
    """A check importable by dotted path (the trigger runs it)."""
    return isinstance(body, list) and len(body) > 0


def job_count(body: Any) -> Any:
    """A check returning a PokeReturnValue with a small XCom value."""
    from airflow.sdk import PokeReturnValue

    return PokeReturnValue(isinstance(body, list) and len(body) > 0, {"jobs": len(body or [])})


async def test_http_trigger_returns_parsed_body(sandbox_conn: Sandbox) -> None:
    event = await first_event(http_trigger("deviceGroup"))
    assert event["status"] == "success"
    assert event["http_status"] == 200
    assert isinstance(event["body"], list)
    assert event["body"][0]["deviceGroupId"]


async def test_http_trigger_404_not_found_ok_keeps_polling_until_deadline(sandbox_conn: Sandbox) -> None:
    event = await first_event(
        http_trigger("job/1/artifacts-nope", not_found_ok=True, deadline=time.time() + 0.5)
    )
    assert event["status"] == "timeout"
    assert sandbox_conn.counters()["status"].get("404", 0) >= 2


async def test_http_trigger_404_is_an_error_without_not_found_ok(sandbox_conn: Sandbox) -> None:
    event = await first_event(http_trigger("testRun/nope/jobs"))
    assert event["status"] == "error"
    assert event["http_status"] == 404


async def test_http_trigger_refuses_a_large_body(sandbox_conn: Sandbox) -> None:
    event = await first_event(http_trigger("deviceGroup", max_event_bytes=100))
    assert event["status"] == "error"
    assert "dotted path" in event["message"]
    assert event["body"] is None


async def test_http_trigger_runs_a_dotted_check(sandbox_conn: Sandbox) -> None:
    run_id = start_run()
    event = await first_event(
        http_trigger(api.test_run_jobs(run_id), response_check_path=f"{__name__}.job_count")
    )
    assert event["status"] == "success"
    assert event["checked"] is True
    assert event["body"] is None  # the reply never left the triggerer
    assert event["xcom_value"]["jobs"] > 0
    assert sandbox_conn.counters()["by_path"][f"/project/sandbox/api/testRun/{run_id}/jobs"] >= 2


async def test_http_trigger_bad_dotted_check_is_an_error() -> None:
    event = await first_event(http_trigger("deviceGroup", response_check_path="no.such.module.check"))
    assert event["status"] == "error"
    assert "cannot be imported" in event["message"]


# --- serialization ---------------------------------------------------------------------------------


def test_serialize_round_trips_and_holds_no_secret(sandbox_conn: Sandbox) -> None:
    token = QuamotionHook().get_token()
    secrets = [sandbox_conn.client_secret, sandbox_conn.api_key, token]
    triggers = [
        QuamotionTestRunTrigger(
            "run-1",
            poll_interval=5,
            deadline=123.0,
            allow_skipped=True,
            hook_settings={"retry": RetryPolicy(max_attempts=2), "timeout": 9, "project": "sandbox"},
        ),
        QuamotionHttpTrigger(
            "testRun",
            params={"q": 1},
            not_found_ok=True,
            response_check_path=f"{__name__}.has_jobs",
            hook_settings={"verify": sandbox_conn.ca_path},
        ),
    ]
    for trigger in triggers:
        classpath, kwargs = trigger.serialize()
        text = json.dumps(kwargs)  # JSON-safe: stored as is
        for secret in secrets:
            assert secret not in text
        for word in ("client_secret", "api_key", "password", "token"):
            assert word not in text
        module, _, name = classpath.rpartition(".")
        clone = getattr(__import__(module, fromlist=[name]), name)(**kwargs)
        assert clone.serialize() == (classpath, kwargs)


def test_hook_settings_refuse_secrets_and_rebuild_retry() -> None:
    with pytest.raises(QuamotionConfigError, match="connection"):
        safe_hook_settings({"client_secret": "x"})
    with pytest.raises(QuamotionConfigError, match="connection"):
        safe_hook_settings({"api_key": "x"})
    with pytest.raises(QuamotionConfigError, match="Unknown"):
        safe_hook_settings({"bogus": 1})
    safe = safe_hook_settings({"retry": RetryPolicy(max_attempts=2, retry_statuses=frozenset({503}))})
    assert safe == {"retry": {**safe["retry"], "max_attempts": 2, "retry_statuses": [503]}}
    rebuilt = hook_overrides(safe)["retry"]
    assert rebuilt == RetryPolicy(max_attempts=2, retry_statuses=frozenset({503}))


_OFF_THE_LOOP = r"""
import asyncio, importlib.abc, json, sys, threading, time

seen = {}


class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("airflow_provider_quamotion.hooks.quamotion", "requests", "msal"):
            seen.setdefault(name, threading.current_thread().name)
        return None


from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger

sys.meta_path.insert(0, Watch())


async def main():
    threading.current_thread().name = "event-loop"
    trigger = QuamotionTestRunTrigger(sys.argv[1], poll_interval=0.1, deadline=time.time() + 20)
    async for event in trigger.run():
        return event.payload


payload = asyncio.run(main())
print(json.dumps({"seen": seen, "status": payload["status"]}))
"""


def test_the_first_trigger_imports_the_hook_off_the_event_loop(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    run_id = start_run()
    script = tmp_path / "off_the_loop.py"
    script.write_text(_OFF_THE_LOOP)
    proc = subprocess.run(
        [sys.executable, str(script), run_id], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == "success"
    assert "airflow_provider_quamotion.hooks.quamotion" in result["seen"], result
    assert set(result["seen"].values()) - {"event-loop"}, result  # imported by a worker thread
    assert "event-loop" not in result["seen"].values(), result
