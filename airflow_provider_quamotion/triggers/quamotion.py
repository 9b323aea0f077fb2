"""Triggers: wait on Quamotion Cloud in the triggerer, on the hook's auth, retry, TLS and error rules.

Both triggers poll through :class:`~airflow_provider_quamotion.hooks.quamotion.QuamotionAsyncHook`
(the connection is read with ``aget_connection``, tokens come from the process-wide cache without
blocking the event loop, transient failures are retried by the shared transport policy). They never
submit work: the worker posts, the trigger only reads, so a restarted triggerer cannot duplicate a
run.

``serialize()`` holds ids and settings only - never a secret, a token or a connection's extra -
and every event is small and bounded (see :data:`MAX_EVENT_BYTES` and
:data:`~airflow_provider_quamotion.api.MAX_SUMMARY_JOBS`).

Deadlines are absolute epoch seconds: the worker computes one from the sensor's ``timeout`` and the
task's ``execution_timeout`` and the trigger yields a ``timeout`` event when it passes, so both limits
hold while the task is deferred (Airflow itself does not apply ``execution_timeout`` to a deferral).

This module imports only ``airflow.triggers.base`` and light project modules at import time; the
hook (aiohttp, msal) is imported when a trigger runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

try:  # Airflow 3.0+ (AIP-82); the event trigger degrades to a plain trigger should a minor lack it
    from airflow.triggers.base import BaseEventTrigger
except ImportError:  # pragma: no cover - every supported Airflow 3 minor has it
    import logging

    logging.getLogger(__name__).warning(
        "airflow.triggers.base.BaseEventTrigger is missing: QuamotionTestRunEventTrigger cannot be used "
        "in an AssetWatcher on this Airflow."
    )
    BaseEventTrigger = BaseTrigger  # type: ignore[misc,assignment]

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionError,
    QuamotionNotFoundError,
    redact,
)
from airflow_provider_quamotion.logs import DEFAULT_LOG_BUDGET_BYTES, JobLogFollower, check_log_budget
from airflow_provider_quamotion.runs import (  # the wait helpers, shared with operators and sensors
    DEFAULT_CONN_ID,
    MAX_EVENT_BYTES,
    STATUS_ERROR,
    STATUS_FAILED,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    hook_overrides,
    import_check,
    is_transient_error,
    poll_failure,
    run_check,
    safe_hook_settings,
)

if TYPE_CHECKING:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook

#: The longest message an event carries.
MAX_MESSAGE_CHARS = 1000


#: A shared hook is handed to new triggers for this long; then a fresh one (re-reading the connection)
#: is made, and the old one closes when its last trigger ends.
SHARED_HOOK_MAX_AGE = 900.0
#: First polls of the triggers sharing a hook that start together (a triggerer restart, a large DAG
#: run) are spread over one poll interval, evenly whatever their number N: the k-th of a burst waits
#: frac(k x FIRST_POLL_STRIDE) of the interval (the golden-ratio sequence, whose first N points split
#: the interval into gaps of about interval / N), so 10,000 triggers make an even 5,000 polls/s at a
#: 2 s interval from the first round on, never one instant's burst. A trigger started alone polls at
#: once; a burst ends when no trigger has started for one poll interval.
FIRST_POLL_STRIDE = (math.sqrt(5) - 1) / 2


@dataclass
class _Shared:
    hook: QuamotionAsyncHook
    created: float
    users: int = 0
    #: when (``time.monotonic()``) the last first poll was reserved
    last_first_poll: float = -math.inf
    #: first polls reserved in the current burst
    burst: int = 0

    def first_poll_wait(self, poll_interval: float) -> float:
        """Reserve this trigger's first-poll slot; the seconds to wait for it (less than ``poll_interval``)."""
        now = time.monotonic()
        if now - self.last_first_poll > poll_interval:
            self.burst = 0
        self.last_first_poll = now
        wait = (self.burst * FIRST_POLL_STRIDE) % 1.0 * poll_interval
        self.burst += 1
        return wait


_SHARED_HOOKS: dict[tuple[int, str, str], _Shared] = {}


async def _import_off_the_loop(name: str) -> Any:
    """``name``'s module, imported in a worker thread the first time: importing the hook (requests,
    msal's helpers, the transport) takes the better part of a second cold, which must not stall every
    other trigger of the triggerer's event loop."""
    module = sys.modules.get(name)
    if module is None:
        module = await asyncio.to_thread(importlib.import_module, name)
    return module


@contextlib.asynccontextmanager
async def _shared_entry(conn_id: str, hook_settings: Mapping[str, Any]) -> AsyncIterator[_Shared]:
    hooks = await _import_off_the_loop("airflow_provider_quamotion.hooks.quamotion")

    key = (id(asyncio.get_running_loop()), conn_id, json.dumps(hook_settings, sort_keys=True, default=str))
    entry = _SHARED_HOOKS.get(key)
    if entry is None or time.monotonic() - entry.created > SHARED_HOOK_MAX_AGE:
        entry = _Shared(hooks.QuamotionAsyncHook(conn_id, **hook_overrides(hook_settings)), time.monotonic())
        _SHARED_HOOKS[key] = entry
    entry.users += 1
    try:
        yield entry
    finally:
        entry.users -= 1
        if entry.users == 0:
            if _SHARED_HOOKS.get(key) is entry:
                del _SHARED_HOOKS[key]
            await entry.hook.aclose()


@contextlib.asynccontextmanager
async def shared_hook(conn_id: str, hook_settings: Mapping[str, Any]) -> AsyncIterator[QuamotionAsyncHook]:
    """One :class:`QuamotionAsyncHook` per event loop, connection and settings, shared by triggers.

    A triggerer running 1,000 triggers then reads the connection once and holds one HTTP client (one
    bounded connection pool, one TLS context) instead of 1,000; the project is looked up once and
    tokens are shared process-wide. An entry older than :data:`SHARED_HOOK_MAX_AGE` is not handed out
    again, so a changed connection is picked up; each hook is closed when its last trigger ends (or is
    cancelled).

    :param conn_id: the Airflow connection ID.
    :param hook_settings: the trigger's non-secret hook settings.
    """
    async with _shared_entry(conn_id, hook_settings) as entry:
        yield entry.hook


def _message(text: str) -> str:
    text = redact(text)
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "..."


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.time()


class _QuamotionTriggerBase(BaseTrigger):
    """What both triggers share: the connection, the hook settings, the deadline and the poll interval.

    Polls run under the deadline (the transport's retries never outlive it). A transient failure
    left after the transport's retries (see :func:`is_transient_error`) counts as "not yet": the
    trigger polls again until its deadline and then yields ``timeout``; only a permanent error ends
    the wait with an ``error`` event.
    """

    def __init__(
        self,
        *,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        first_delay: float = 0.0,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise QuamotionConfigError("poll_interval must be a positive number of seconds")
        self.quamotion_conn_id = quamotion_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else None
        self.hook_settings = safe_hook_settings(hook_settings)
        self.first_delay = max(0.0, float(first_delay))

    def _common_kwargs(self) -> dict[str, Any]:
        return {
            "quamotion_conn_id": self.quamotion_conn_id,
            "poll_interval": self.poll_interval,
            "deadline": self.deadline,
            "hook_settings": self.hook_settings,
            "first_delay": self.first_delay,
        }

    @contextlib.asynccontextmanager
    async def _hook(self) -> AsyncIterator[QuamotionAsyncHook]:
        """The shared hook, after this trigger's paced slot for its first poll (deadline permitting)."""
        async with _shared_entry(self.quamotion_conn_id, self.hook_settings) as entry:
            wait = entry.first_poll_wait(self.poll_interval)
            remaining = _remaining(self.deadline)
            if remaining is not None:
                wait = min(wait, remaining / 2)  # leave time for at least one poll
            if wait > 0:
                await asyncio.sleep(wait)
            yield entry.hook

    async def _retry_statuses(self, hook: QuamotionAsyncHook) -> Collection[int]:
        return (await hook.client()).settings.retry.retry_statuses

    async def _sleep(self, seconds: float) -> bool:
        """Sleep ``seconds`` but not past the deadline; ``False`` when the deadline came first."""
        remaining = _remaining(self.deadline)
        if remaining is not None and remaining <= seconds:
            if remaining > 0:
                await asyncio.sleep(remaining)
            return False
        await asyncio.sleep(seconds)
        return True

    def _deadline_passed(self) -> bool:
        remaining = _remaining(self.deadline)
        return remaining is not None and remaining <= 0


class QuamotionTestRunTrigger(_QuamotionTriggerBase):
    """Poll a test run's jobs until the run finishes, fails, or the deadline passes.

    Yields one event, a small dict: ``{"status": "success" | "failed" | "timeout" | "error",
    "test_run_id", "state", "jobs": [{"id", "device", "status"}, ...] (at most
    :data:`~airflow_provider_quamotion.api.MAX_SUMMARY_JOBS`, failed first), "job_count", "deadline",
    "message"}``.

    :param test_run_id: the run to wait on.
    :param quamotion_conn_id: the Airflow connection ID (read with ``aget_connection``).
    :param poll_interval: seconds between polls.
    :param deadline: absolute time (epoch seconds) at which to give up with a ``timeout`` event;
        ``None`` waits for ever.
    :param allow_skipped: count ``skipped`` jobs as passed.
    :param hook_settings: non-secret hook overrides (see :func:`safe_hook_settings`).
    :param first_delay: seconds to wait before the first poll.
    :param follow_logs: between polls, follow the jobs' live logs and write their new lines through
        this trigger's logger (in the triggerer, the task's log); the event's ``logs`` says how much.
    :param log_budget_bytes: the most bytes of job log lines written (see :mod:`~airflow_provider_quamotion.logs`).
    """

    def __init__(
        self,
        test_run_id: str,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        allow_skipped: bool = False,
        hook_settings: Mapping[str, Any] | None = None,
        first_delay: float = 0.0,
        follow_logs: bool = True,
        log_budget_bytes: int = DEFAULT_LOG_BUDGET_BYTES,
    ) -> None:
        super().__init__(
            quamotion_conn_id=quamotion_conn_id,
            poll_interval=poll_interval,
            deadline=deadline,
            hook_settings=hook_settings,
            first_delay=first_delay,
        )
        self.test_run_id = str(test_run_id)
        self.allow_skipped = bool(allow_skipped)
        self.follow_logs = bool(follow_logs)
        self.log_budget_bytes = check_log_budget(log_budget_bytes)
        self._logs = JobLogFollower(self.log, enabled=self.follow_logs, budget_bytes=self.log_budget_bytes)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Ids and settings only: never a secret or a token."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "test_run_id": self.test_run_id,
                "allow_skipped": self.allow_skipped,
                "follow_logs": self.follow_logs,
                "log_budget_bytes": self.log_budget_bytes,
                **self._common_kwargs(),
            },
        )

    def _event(
        self, status: str, message: str, state: str | None = None, jobs: list[Any] | None = None
    ) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status,
                "test_run_id": self.test_run_id,
                "state": state,
                "jobs": api.summarize_jobs(jobs or []),
                "job_count": len(jobs or []),
                "deadline": self.deadline,
                "message": _message(message),
                "logs": self._logs.summary(),
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll ``testRun/{id}/jobs`` every ``poll_interval`` until the run is finished or the deadline."""
        if self.first_delay and not await self._sleep(self.first_delay):
            yield self._timeout_event(None, [])
            return
        async with self._hook() as hook:
            event = await self._poll(hook)
        yield event  # the shared hook is released before the event leaves

    async def _poll(self, hook: QuamotionAsyncHook) -> TriggerEvent:
        state: api.TestRunState | None = None
        jobs: list[Any] = []
        last_error: str | None = None
        try:
            retry_statuses = await self._retry_statuses(hook)
        except QuamotionError as err:
            return self._event(STATUS_ERROR, f"{type(err).__name__}: {err}", None, [])
        while True:
            try:
                found = await hook.list_jobs(self.test_run_id, deadline=self.deadline)
                current = api.run_state_from_jobs(found, allow_skipped=self.allow_skipped)
            except QuamotionNotFoundError as err:
                return self._event(
                    STATUS_ERROR, f"Test run {self.test_run_id!r} was not found: {err}", None, []
                )
            except QuamotionError as err:
                if not is_transient_error(err, retry_statuses):
                    return self._event(STATUS_ERROR, f"{type(err).__name__}: {err}", None, [])
                last_error = poll_failure(err, last_error)
                self.log.warning(
                    "Test run %s: the poll failed after the transport's retries (%s); polling again",
                    self.test_run_id,
                    last_error,
                )
            except (ValueError, TypeError) as err:
                return self._event(STATUS_ERROR, f"{type(err).__name__}: {err}", None, [])
            else:
                state, jobs, last_error = current, found, None
                if state.is_terminal:
                    await self._logs.afinish(hook, jobs, self.deadline)  # the jobs' last log lines
                if state is api.TestRunState.SUCCESS:
                    return self._event(
                        STATUS_SUCCESS, f"Test run {self.test_run_id} passed.", state.value, jobs
                    )
                if state is api.TestRunState.FAILED:
                    return self._event(
                        STATUS_FAILED, f"Test run {self.test_run_id} failed.", state.value, jobs
                    )
                self.log.debug("Test run %s is %s", self.test_run_id, state.value)
            # until the next poll, the jobs' new log lines go to this trigger's log
            left = await self._logs.afollow_for(hook, jobs, self.poll_interval, self.deadline)
            if not await self._sleep(left):
                return self._timeout_event(state.value if state else None, jobs, last_error)

    def _timeout_event(
        self, state: str | None, jobs: list[Any], last_error: str | None = None
    ) -> TriggerEvent:
        failing = f" The last poll failed: {last_error}" if last_error else ""
        return self._event(
            STATUS_TIMEOUT,
            f"Test run {self.test_run_id} did not finish before the deadline "
            f"({time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(self.deadline or 0))}); "
            f"it was {state or 'not polled'}. The run itself keeps going in Quamotion Cloud.{failing}",
            state,
            jobs,
        )


class QuamotionHttpTrigger(_QuamotionTriggerBase):
    """Poll any endpoint until it is ready, for :class:`~airflow_provider_quamotion.sensors.quamotion.QuamotionSensor`.

    "Ready" is a 2xx reply (a 404 counts as "not yet" with ``not_found_ok``); with
    ``response_check_path`` (the dotted path of an importable function taking the parsed reply) the
    trigger also runs that check and keeps polling while it is false. The event carries the parsed
    reply (JSON, or text) when it is at most ``max_event_bytes`` long, so the worker can run a callable
    ``response_check``; a larger reply yields an ``error`` event saying so. When a path check ran,
    the event carries its verdict and XCom value instead of the body.

    Event: ``{"status": "success" | "timeout" | "error", "endpoint", "http_status", "body",
    "checked": bool, "xcom_value", "deadline", "message"}``. The event carries the deadline so the worker
    can defer again with the same one (``airflow dags test`` does not pass ``defer(kwargs=...)`` back
    along with an event).

    :param endpoint: ``"testRun"`` (project-relative), ``"/api/version"`` or a URL on the connection's
        origin.
    :param quamotion_conn_id: the Airflow connection ID.
    :param method: the HTTP method.
    :param params: query parameters (JSON-serializable).
    :param not_found_ok: treat HTTP 404 as "not yet".
    :param response_check_path: dotted path of a check to run in the triggerer.
    :param poll_interval: seconds between polls.
    :param deadline: absolute time (epoch seconds) at which to give up with a ``timeout`` event.
    :param hook_settings: non-secret hook overrides.
    :param first_delay: seconds to wait before the first poll (used when the worker re-defers).
    :param max_event_bytes: the largest body put into an event.
    """

    def __init__(
        self,
        endpoint: str,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        method: str = "GET",
        params: Mapping[str, Any] | None = None,
        not_found_ok: bool = False,
        response_check_path: str | None = None,
        poll_interval: float = 30.0,
        deadline: float | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        first_delay: float = 0.0,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        super().__init__(
            quamotion_conn_id=quamotion_conn_id,
            poll_interval=poll_interval,
            deadline=deadline,
            hook_settings=hook_settings,
            first_delay=first_delay,
        )
        self.endpoint = endpoint
        self.method = method.upper()
        self.params = dict(params) if params else None
        self.not_found_ok = bool(not_found_ok)
        self.response_check_path = response_check_path
        self.max_event_bytes = int(max_event_bytes)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The endpoint, its parameters and settings: never a secret or a token."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "endpoint": self.endpoint,
                "method": self.method,
                "params": self.params,
                "not_found_ok": self.not_found_ok,
                "response_check_path": self.response_check_path,
                "max_event_bytes": self.max_event_bytes,
                **self._common_kwargs(),
            },
        )

    def _event(self, status: str, message: str, **fields: Any) -> TriggerEvent:
        payload: dict[str, Any] = {
            "status": status,
            "endpoint": self.endpoint,
            "http_status": None,
            "body": None,
            "checked": False,
            "xcom_value": None,
            "deadline": self.deadline,
            "message": _message(message),
        }
        payload.update(fields)
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the endpoint until it is ready (and the path check, if any, passes) or the deadline."""
        check = None
        if self.response_check_path:
            try:
                check = import_check(self.response_check_path)
            except QuamotionConfigError as err:
                yield self._event(STATUS_ERROR, str(err))
                return
        if self.first_delay and not await self._sleep(self.first_delay):
            yield self._event(STATUS_TIMEOUT, self._timeout_message())
            return
        async with self._hook() as hook:
            try:
                event = await self._poll(hook, check)
            except QuamotionError as err:
                event = self._event(STATUS_ERROR, f"{type(err).__name__}: {err}")
        yield event  # the shared hook is released before the event leaves

    async def _poll(self, hook: QuamotionAsyncHook, check: Any) -> TriggerEvent:
        retry_statuses = await self._retry_statuses(hook)
        last_error: str | None = None
        from airflow_provider_quamotion.transport.jsonio import MAX_BODY_BYTES, QuamotionResponseTooLargeError

        # the body is bounded as it is read: the event's size for the worker's check, else a budget
        budget = MAX_BODY_BYTES if check is not None else self.max_event_bytes
        while True:
            try:
                response = await hook.request(
                    self.method,
                    self.endpoint,
                    params=self.params,
                    deadline=self.deadline,
                    max_bytes=budget,
                )
            except QuamotionResponseTooLargeError as err:
                if check is not None:
                    raise
                return self._event(
                    STATUS_ERROR,
                    f"{self.method} {self.endpoint} returned more than the {self.max_event_bytes} bytes "
                    "a trigger event may carry to the worker's response_check (reading stopped there). "
                    "Poll a narrower endpoint, or give response_check as the dotted path of an "
                    f"importable function so the triggerer judges the reply itself. ({err})",
                )
            except QuamotionNotFoundError as err:
                if not self.not_found_ok:
                    return self._event(STATUS_ERROR, str(err), http_status=404)
                self.log.info("%s %s: 404, not there yet", self.method, self.endpoint)
                last_error = None
            except QuamotionError as err:
                if not is_transient_error(err, retry_statuses):
                    raise
                last_error = poll_failure(err, last_error)
                self.log.warning(
                    "%s %s failed after the transport's retries (%s); polling again",
                    self.method,
                    self.endpoint,
                    last_error,
                )
            else:
                size = len(response.content)
                # a large body (a path check's, up to the budget) is parsed off the event loop
                body = (
                    await asyncio.to_thread(parse_body, response) if size > 1 << 20 else parse_body(response)
                )
                if check is not None:
                    try:
                        verdict, xcom_value = run_check(check, body)
                    except Exception as err:
                        return self._event(
                            STATUS_ERROR,
                            f"response_check {self.response_check_path} raised {type(err).__name__}: {err}",
                            http_status=response.status_code,
                        )
                    if verdict:
                        if _json_size(xcom_value) > self.max_event_bytes:
                            return self._event(
                                STATUS_ERROR,
                                f"response_check {self.response_check_path} returned an XCom value larger "
                                f"than {self.max_event_bytes} bytes; return something small (an id, a count).",
                                http_status=response.status_code,
                            )
                        return self._event(
                            STATUS_SUCCESS,
                            f"{self.method} {self.endpoint} passed {self.response_check_path}.",
                            http_status=response.status_code,
                            checked=True,
                            xcom_value=xcom_value,
                        )
                elif size > self.max_event_bytes:
                    return self._event(
                        STATUS_ERROR,
                        f"{self.method} {self.endpoint} returned {size} bytes, more than the "
                        f"{self.max_event_bytes} a trigger event may carry to the worker's response_check. "
                        "Poll a narrower endpoint, or give response_check as the dotted path of an "
                        "importable function so the triggerer judges the reply itself.",
                        http_status=response.status_code,
                    )
                else:
                    return self._event(
                        STATUS_SUCCESS,
                        f"{self.method} {self.endpoint} answered HTTP {response.status_code}.",
                        http_status=response.status_code,
                        body=body,
                    )
            if not await self._sleep(self.poll_interval):
                return self._event(STATUS_TIMEOUT, self._timeout_message(last_error))

    def _timeout_message(self, last_error: str | None = None) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline or 0))
        failing = f" The last poll failed: {last_error}" if last_error else ""
        return f"{self.method} {self.endpoint} was not ready before the deadline ({when}).{failing}"


# --- event-driven DAGs: one event per finished test run ----------------------------------------------

#: The asset state store key prefix of an event trigger's progress (Airflow >= 3.3); the rest of the
#: key is a digest of the trigger's connection and filters, so changed filters start afresh.
EVENT_STATE_KEY = "quamotion.test_run_events"
#: At most this many jobs are summarised in an event (failed first).
EVENT_SUMMARY_JOBS = 20
#: At most this many finished runs are remembered (the oldest are forgotten first).
MAX_SETTLED_RUNS = 5000
#: Test-run states an event trigger can be filtered on.
EVENT_STATES = (api.TestRunState.SUCCESS.value, api.TestRunState.FAILED.value)

_NO_STATE_STORE = (
    "QuamotionTestRunEventTrigger: this Airflow (< 3.3, or a trigger not watched by an AssetWatcher) has "
    "no asset state store, so progress is kept in memory only: after a triggerer restart, runs that "
    "finished in the last %s s (lookback) are emitted again (at-least-once; make the DAG idempotent on "
    "test_run_id)."
)


def _epoch(value: Any, name: str) -> float | None:
    from airflow_provider_quamotion.export.window import parse_instant

    parsed = parse_instant(value, name=name)
    return None if parsed is None else parsed.timestamp()


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def run_finished_at(jobs: Iterable[Mapping[str, Any]]) -> float | None:
    """When a finished run ended: the latest ``started + duration`` of its jobs' latest attempts.

    ``None`` when no job says (the caller then uses the time it saw the run finished).

    :param jobs: the run's jobs.
    """
    from airflow_provider_quamotion.export.window import parse_instant

    ends: list[float] = []
    for job in api.latest_attempts(jobs):
        started, duration = job.get(api.JOB_STARTED), job.get("duration")
        if not isinstance(duration, int | float) or isinstance(duration, bool):
            continue
        try:
            begin = parse_instant(started, name=api.JOB_STARTED) if isinstance(started, str) else None
        except QuamotionConfigError:
            begin = None
        if begin is not None:
            ends.append(begin.timestamp() + float(duration))
    return max(ends) if ends else None


def job_counts(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of a run's jobs (latest attempt per job name) ended in each status."""
    counts: dict[str, int] = {}
    for job in api.latest_attempts(jobs):
        status = str(job.get(api.JOB_STATUS))
        counts[status] = counts.get(status, 0) + 1
    return dict(sorted(counts.items()))


@dataclass
class FinishedRuns:
    """What an event trigger knows: which runs it has settled (emitted, or finished before it watched).

    Pure bookkeeping, no I/O: :class:`QuamotionTestRunEventTrigger` feeds it the run list and each
    candidate's jobs.

    :param since: runs that finished before this (epoch seconds) are never emitted.
    :param lookback: seconds: runs scheduled longer ago are not watched; without saved progress, runs
        that finished within it are emitted.
    :param states: the run states that are emitted (the others are settled silently).
    :param app: only runs of this ``appId`` (``None``: every app).
    :param device_groups: only runs on these ``deviceGroupId`` values, lower case (``None``: every group).
    """

    since: float | None
    lookback: float
    states: frozenset[str]
    app: str | None = None
    device_groups: frozenset[str] | None = None
    #: run id -> its ``scheduled`` (epoch seconds, ``None`` when unknown), for pruning
    settled: dict[str, float | None] = field(default_factory=dict)
    #: runs finished before this (epoch seconds) are settled silently: the window of a baseline
    replay_from: float | None = None
    #: the zone of a ``scheduled`` without an offset (the connection's ``scheduled_timezone``)
    naive_tz: Any = datetime.timezone.utc

    def start(self, saved: Mapping[str, Any] | None, now: float) -> None:
        """Begin from saved progress, or (none saved) replay runs finished within ``lookback``.

        :param saved: the value :meth:`snapshot` returned before a restart, or ``None``.
        :param now: the current time (epoch seconds).
        """
        settled = saved.get("settled") if isinstance(saved, Mapping) else None
        if isinstance(settled, Mapping):
            self.settled = {
                str(k): float(v) if isinstance(v, int | float) else None for k, v in settled.items()
            }
            self.replay_from = None
        else:
            self.settled = {}
            self.replay_from = now - self.lookback

    def candidates(self, runs: list[Any], now: float) -> list[tuple[str, Mapping[str, Any]]]:
        """The runs to look at: matching the filters, scheduled within ``lookback``, not settled."""
        from airflow_provider_quamotion.export.window import scheduled_of

        oldest = now - self.lookback
        out: list[tuple[str, Mapping[str, Any]]] = []
        for run in runs:
            if not isinstance(run, Mapping) or not run.get(api.TEST_RUN_ID):
                continue
            run_id = str(run[api.TEST_RUN_ID])
            if run_id in self.settled:
                continue
            if self.app is not None and run.get("appId") != self.app:
                continue
            if (
                self.device_groups is not None
                and str(run.get("deviceGroup", "")).lower() not in self.device_groups
            ):
                continue
            scheduled = scheduled_of(run, self.naive_tz)
            if scheduled is not None and scheduled.timestamp() < oldest:
                continue
            out.append((run_id, run))
        return out

    def finished(
        self, run_id: str, run: Mapping[str, Any], jobs: list[dict[str, Any]], now: float
    ) -> dict[str, Any] | None:
        """Settle a run whose jobs say it finished; its event's payload when it is to be emitted.

        :param run_id: the run.
        :param run: its record (from ``GET testRun``).
        :param jobs: its jobs.
        :param now: when it was seen finished (its finish time when the jobs do not tell).
        :returns: ``None`` while the run is not finished, or when it is settled without an event
            (filtered out by ``states``, or finished before ``since`` / the replay window).
        """
        from airflow_provider_quamotion.export.window import scheduled_of

        state = api.run_state_from_jobs(jobs)
        if not state.is_terminal:
            return None
        scheduled = scheduled_of(run, self.naive_tz)
        self.settled[run_id] = scheduled.timestamp() if scheduled is not None else None
        finished = run_finished_at(jobs) or now
        if state.value not in self.states:
            return None
        if self.replay_from is not None and finished < self.replay_from:
            return None
        if self.since is not None and finished < self.since:
            return None
        return {
            "test_run_id": run_id,
            "state": state.value,
            "job_counts": job_counts(jobs),
            "job_count": len(api.latest_attempts(jobs)),
            "finished": _iso(finished),
            "scheduled": run.get(api.TEST_RUN_SCHEDULED),
            "app_id": run.get("appId"),
            "app_version": run.get("appVersion"),
            "test_package": run.get("testPackageName"),
            "device_group": run.get("deviceGroup"),
            "jobs": api.summarize_jobs(jobs, EVENT_SUMMARY_JOBS),
        }

    def forget(self, run_id: str) -> None:
        """Settle a run that no longer exists (its jobs answer 404)."""
        self.settled[run_id] = None

    def end_of_baseline(self) -> None:
        """After the first full poll, every later finish is emitted (whatever its finish time)."""
        self.replay_from = None

    def snapshot(self, now: float) -> dict[str, Any]:
        """The progress to save: the settled runs still within ``lookback`` (at most :data:`MAX_SETTLED_RUNS`)."""
        oldest = now - 2 * self.lookback
        kept = {k: v for k, v in self.settled.items() if v is None or v >= oldest}
        if len(kept) > MAX_SETTLED_RUNS:
            ordered = sorted(kept.items(), key=lambda kv: kv[1] if kv[1] is not None else now)
            kept = dict(ordered[-MAX_SETTLED_RUNS:])
        self.settled = kept
        return {"version": 1, "saved": _iso(now), "settled": dict(kept)}


class QuamotionTestRunEventTrigger(_QuamotionTriggerBase, BaseEventTrigger):
    """Watch the project's test runs and emit one event per run that finishes, for an ``AssetWatcher``.

    Every ``poll_interval`` the trigger lists the project's test runs (``GET testRun``) and reads the
    jobs of each run it has not yet seen finish (at most ``max_concurrency`` at once, through the
    triggerer's one shared hook: one connection read, one token, one connection pool for every
    Quamotion trigger). When a run's jobs have all finished it yields
    ``TriggerEvent({"test_run_id", "state": "success" | "failed", "job_counts": {"success": 3, ...},
    "job_count", "finished": "2026-12-02T01:02:03Z", "scheduled", "app_id", "app_version",
    "test_package", "device_group", "jobs": [{"id", "device", "status"}, ...]})``, so a DAG scheduled
    on the watched Asset runs for each finished run (Airflow may put several events queued between two
    scheduler loops into one DAG run: read them all from ``triggering_asset_events``).

    **Delivery: at least once, duplicates only after a restart.** On Airflow >= 3.3 the trigger saves
    which runs it has settled in the watched Asset's state store (one poll interval after their events
    were yielded), so a restarted triggerer goes on where it stopped: runs that finished while it was
    down are emitted, and only runs emitted within the last poll interval before the restart may be
    emitted again. Below 3.3 (no asset state store) progress lives in memory: a restart emits again
    every run that finished within ``lookback``. No finished run within ``lookback`` is lost; the run
    id is in every event, so a DAG can skip one it has handled. Without saved progress (the first
    start, or below 3.3) runs that finished within ``lookback`` (and not before ``since``) are
    emitted first.

    Transient API failures (after the transport's retries) and permanent ones (a wrong secret, an
    unknown project: fix the connection, which is re-read every
    :data:`SHARED_HOOK_MAX_AGE` seconds) are logged and polled again; the trigger never ends by itself.

    :param quamotion_conn_id: the Airflow connection ID.
    :param poll_interval: seconds between polls of the run list.
    :param app: only runs of this application (its ``appId``).
    :param device_group: only runs on this device group: its ``deviceGroupId``, or its name or
        display name (looked up in ``GET deviceGroup``).
    :param states: only runs that ended so: ``"success"``, ``"failed"`` or a list (default: both).
    :param since: an ISO 8601 time: runs that finished before it are never emitted (``None``: no bound).
    :param lookback: seconds: runs scheduled longer ago are not watched, and without saved progress
        runs that finished within it are emitted.
    :param hook_settings: non-secret hook overrides (see :func:`safe_hook_settings`).
    :param max_concurrency: job lists read at once.
    """

    def __init__(
        self,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 60.0,
        app: str | None = None,
        device_group: str | None = None,
        states: str | Collection[str] | None = None,
        since: str | None = None,
        lookback: float = 6 * 3600.0,
        hook_settings: Mapping[str, Any] | None = None,
        max_concurrency: int = 8,
    ) -> None:
        super().__init__(
            quamotion_conn_id=quamotion_conn_id, poll_interval=poll_interval, hook_settings=hook_settings
        )
        wanted = [states] if isinstance(states, str) else list(EVENT_STATES if states is None else states)
        unknown = sorted(set(wanted) - set(EVENT_STATES))
        if unknown or not wanted:
            raise QuamotionConfigError(
                f"states={states!r}: use 'success', 'failed' or both (unknown: {', '.join(unknown) or 'none'})."
            )
        if float(lookback) <= 0:
            raise QuamotionConfigError("lookback must be a positive number of seconds")
        if int(max_concurrency) < 1:
            raise QuamotionConfigError("max_concurrency must be at least 1")
        self.app = app or None
        self.device_group = device_group or None
        self.states = sorted(set(wanted))
        self.since = str(since) if since else None
        self._since_epoch = _epoch(self.since, "since")
        self.lookback = float(lookback)
        self.max_concurrency = int(max_concurrency)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Settings and filters only (stable across DAG parses: an AssetWatcher's trigger is found by them)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "quamotion_conn_id": self.quamotion_conn_id,
                "poll_interval": self.poll_interval,
                "app": self.app,
                "device_group": self.device_group,
                "states": list(self.states),
                "since": self.since,
                "lookback": self.lookback,
                "hook_settings": self.hook_settings,
                "max_concurrency": self.max_concurrency,
            },
        )

    @property
    def state_key(self) -> str:
        """The asset state store key of this trigger's progress (a digest of its connection and filters)."""
        import hashlib

        identity = json.dumps(
            [
                self.quamotion_conn_id,
                self.app,
                self.device_group,
                self.states,
                self.since,
                self.hook_settings.get("project"),
            ],
            sort_keys=True,
            default=str,
        )
        return f"{EVENT_STATE_KEY}.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    def _store(self) -> Any:
        """The watched Asset's state store accessor, or ``None`` (one log line says what that means)."""
        store = getattr(self, "asset_state_store", None)
        if store is None:
            self.log.warning(_NO_STATE_STORE, f"{self.lookback:g}")
        return store

    async def _load(self, store: Any) -> Any:
        if store is None:
            return None
        try:
            return await store.aget(self.state_key)
        except Exception as err:  # a store that cannot answer must not stop the watch
            self.log.warning(
                "Cannot read the saved progress (%s: %s); starting without it.", type(err).__name__, err
            )
            return None

    async def _save(self, store: Any, value: Mapping[str, Any]) -> None:
        if store is None:
            return
        try:
            await store.aset(self.state_key, dict(value))
        except Exception as err:
            self.log.warning("Cannot save the progress (%s: %s); will try again.", type(err).__name__, err)

    def _book(self) -> FinishedRuns:
        return FinishedRuns(
            since=self._since_epoch,
            lookback=self.lookback,
            states=frozenset(self.states),
            app=self.app,
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll for ever, yielding one event per run that finishes (see the class's docstring)."""
        store = self._store()
        book = self._book()
        book.start(await self._load(store), time.time())
        pending_save: dict[str, Any] | None = None
        paced = False
        while True:
            async with _shared_entry(self.quamotion_conn_id, self.hook_settings) as entry:
                if not paced:  # first polls of triggers started together are spread (see _Shared)
                    paced = True
                    wait = entry.first_poll_wait(self.poll_interval)
                    if wait > 0:
                        await asyncio.sleep(wait)
                while time.monotonic() - entry.created <= SHARED_HOOK_MAX_AGE:
                    if pending_save is not None:  # the events of the last poll were yielded a poll ago
                        await self._save(store, pending_save)
                    events, complete = await self._poll(entry.hook, book)
                    if complete:
                        book.end_of_baseline()
                    for payload in events:
                        yield TriggerEvent(payload)
                    pending_save = book.snapshot(time.time())
                    await asyncio.sleep(self.poll_interval)

    async def _groups(self, hook: QuamotionAsyncHook) -> frozenset[str] | None:
        """The ``deviceGroupId`` values the ``device_group`` filter names (lower case)."""
        if self.device_group is None:
            return None
        if api.is_guid(self.device_group):
            return frozenset({self.device_group.lower()})
        from airflow_provider_quamotion.hooks.quamotion import device_group_matches

        groups = await hook.list_records(api.DEVICE_GROUPS)
        matches = device_group_matches(self.device_group, groups)
        if not matches:
            self.log.error("No device group is named %r in this project: no run matches.", self.device_group)
        return frozenset(str(g.get(api.DEVICE_GROUP_ID, "")).lower() for g in matches)

    async def _poll(self, hook: QuamotionAsyncHook, book: FinishedRuns) -> tuple[list[dict[str, Any]], bool]:
        """One poll: the payloads of the runs that finished, and whether every candidate was read."""
        try:
            settings = (await hook.client()).settings
            retry_statuses = settings.retry.retry_statuses
            book.naive_tz = getattr(settings, "scheduled_tzinfo", datetime.timezone.utc)
            if self.device_group is not None and book.device_groups is None:
                book.device_groups = await self._groups(hook)
            runs = await hook.list_records(api.TEST_RUNS)
        except QuamotionError as err:
            self._log_failure("Listing the test runs", err, None)
            return [], False
        now = time.time()
        semaphore = asyncio.Semaphore(self.max_concurrency)

        async def jobs_of(run_id: str) -> list[dict[str, Any]] | BaseException:
            async with semaphore:
                try:
                    return await hook.list_jobs(run_id)
                except QuamotionError as err:
                    return err

        candidates = book.candidates(runs, now)
        replies = await asyncio.gather(*(jobs_of(run_id) for run_id, _ in candidates))
        events: list[dict[str, Any]] = []
        complete = True
        for (run_id, run), reply in zip(candidates, replies, strict=True):
            if isinstance(reply, QuamotionNotFoundError):
                book.forget(run_id)
            elif isinstance(reply, BaseException):
                complete = False
                self._log_failure(f"Reading the jobs of test run {run_id}", reply, retry_statuses)
            else:
                payload = book.finished(run_id, run, reply, now)
                if payload is not None:
                    events.append(payload)
        events.sort(key=lambda p: (p["finished"], p["test_run_id"]))
        return events, complete

    def _log_failure(self, what: str, err: BaseException, retry_statuses: Collection[int] | None) -> None:
        if is_transient_error(err, retry_statuses):
            self.log.warning(
                "%s failed after the transport's retries (%s: %s); polling again",
                what,
                type(err).__name__,
                err,
            )
        else:
            self.log.error(
                "%s failed (%s: %s); polling again in %s s (check the connection)",
                what,
                type(err).__name__,
                _message(str(err)),
                self.poll_interval,
            )


def parse_body(response: Any) -> Any:
    """A reply's parsed JSON, or its text when it is not JSON, or ``None`` when it is empty."""
    from airflow_provider_quamotion.transport.jsonio import json_or_text

    encoding = getattr(response, "encoding", None)
    return json_or_text(response.content, encoding if isinstance(encoding, str) else None)


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return len(str(value))


__all__ = [
    "MAX_EVENT_BYTES",
    "FinishedRuns",
    "QuamotionHttpTrigger",
    "QuamotionTestRunEventTrigger",
    "QuamotionTestRunTrigger",
    "hook_overrides",
    "import_check",
    "is_transient_error",
    "parse_body",
    "run_check",
    "safe_hook_settings",
]
