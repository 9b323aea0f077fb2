"""Job logs in the Airflow task log while a wait runs: one mechanism for the sensor, the operator and the trigger.

While a test run is waited on, :class:`JobLogFollower` follows each job's live log
(``GET job/{id}/log/live``, :meth:`QuamotionHook.stream_job_log` / :meth:`QuamotionAsyncHook.stream_job_log`)
and writes the lines not shown yet to the task's logger, prefixed with the job's id:

* the worker waits (the start operator's wait, the sensor's pokes) follow with :meth:`JobLogFollower.follow`
  (a few threads, each stream bounded by the byte budget and a deadline); the operator's wait follows
  *instead of* sleeping between polls, the sensor for a slice of each poke (:data:`POKE_FOLLOW_SECONDS`);
* the trigger follows with :meth:`JobLogFollower.afollow` between its polls, through its own logger
  (in the triggerer those lines reach the task's log).

The live stream replays a job's log from its start on every request: lines already shown are counted
per job and skipped, so a reconnection shows only new lines. A job whose stream ended (the service
ends it when the job ends) is not followed again. Everything shown is bounded by a per-task budget
(:data:`DEFAULT_LOG_BUDGET_BYTES`): past it one "truncated" line is written and following stops.
A sensor in reschedule mode keeps the counts in the task state store between its pokes.

Nothing here imports the hook: it is handed in, so this module is light at DAG-parse time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionError

#: The most bytes of job log lines one task shows in its log (all jobs together), by default.
DEFAULT_LOG_BUDGET_BYTES = 1024 * 1024
#: Jobs followed at once by one wait (the others wait for a later interval).
MAX_FOLLOWED_JOBS = 8
#: After the run finished, the longest the wait keeps following to show the last lines (the live
#: streams of finished jobs end by themselves, at once).
DRAIN_SECONDS = 10.0
#: At the end of a wait in the triggerer, the longest a job waits for a free stream slot; past it
#: (thousands of triggers ending together) its last lines are not shown, said in one line, so the
#: event is not held back.
DRAIN_SLOT_WAIT_SECONDS = 1.0
#: A poke/reschedule sensor follows the live logs for at most this long in each poke (then sleeps
#: its ``poke_interval`` as any sensor).
POKE_FOLLOW_SECONDS = 5.0
#: Live streams open at once per event loop, for following running jobs between polls; as many
#: again for the end of a wait (the last lines of finished jobs, whose streams end at once). Each
#: holds one pooled connection of the triggerer's shared client, whose polls keep the rest.
MAX_ASYNC_STREAMS = 25
#: Task state store key of a reschedule sensor's follower state.
STATE_KEY = "quamotion_job_logs"

_STATUSES_WITHOUT_LOG = frozenset({api.JobStatus.CREATED.value, api.JobStatus.SKIPPED.value})
#: Per event loop (weakly: a closed loop's entry goes with it), the open-stream slots by use.
_ASYNC_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _slots(use: str = "follow") -> asyncio.Semaphore:
    """The stream slots of the running event loop for ``use``: ``"follow"`` (running jobs, between
    polls) or ``"drain"`` (the end of a wait): a drain never waits behind long follows."""
    per_use = _ASYNC_SLOTS.setdefault(asyncio.get_running_loop(), {})
    if use not in per_use:
        per_use[use] = asyncio.Semaphore(MAX_ASYNC_STREAMS)
    return per_use[use]


def _until(start: float, seconds: float, deadline: float | None) -> float:
    until = start + max(0.0, seconds)
    return until if deadline is None else min(until, deadline)


def check_log_budget(value: Any) -> int:
    """``log_budget_bytes`` checked at DAG-parse time: a whole number of bytes, at least 0.

    :raises QuamotionConfigError: for anything else.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise QuamotionConfigError(
            f"log_budget_bytes={value!r} must be a whole number of bytes (>= 0), e.g. "
            f"{DEFAULT_LOG_BUDGET_BYTES} (1 MiB); pass follow_logs=False to show no job log."
        )
    return value


class LineSplitter:
    """Bytes as they arrive -> complete lines (without their line break), decoded as UTF-8."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        """The lines ``chunk`` completes."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        return [_decode(line) for line in lines]

    def end(self) -> list[str]:
        """The last, unterminated line when the body ended (nothing when it ended with a newline)."""
        rest, self._pending = self._pending, b""
        return [_decode(rest)] if rest else []


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", errors="replace")


class JobLogFollower:
    """Which lines of which job were shown, the budget, and how to follow a run's jobs (sync and async).

    :param logger: where lines go (the task's or the trigger's logger).
    :param enabled: ``False`` shows nothing and sends no request (``follow_logs=False``).
    :param budget_bytes: the most bytes of lines shown, all jobs together.
    :param store: a task state store (``get``/``set``) keeping the counts between a reschedule
        sensor's pokes; ``None`` keeps them in this object only.
    """

    def __init__(
        self,
        logger: logging.Logger | Any,
        *,
        enabled: bool = True,
        budget_bytes: int = DEFAULT_LOG_BUDGET_BYTES,
        store: Any = None,
    ) -> None:
        self.logger = logger
        self.enabled = bool(enabled)
        self.budget_bytes = check_log_budget(budget_bytes)
        self.store = store
        #: lines of each job already shown (or passed over), and their bytes
        self.shown: dict[str, int] = {}
        self.shown_bytes: dict[str, int] = {}
        self.used = 0
        self.lines = 0
        self.done: set[str] = set()
        self.truncated = False
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        if store is not None:
            self._restore(store.get(STATE_KEY))

    # --- state --------------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        """What was shown: ``{"lines", "bytes", "truncated"}`` (small, for an event)."""
        return {"lines": self.lines, "bytes": self.used, "truncated": self.truncated}

    def _restore(self, saved: Any) -> None:
        if not isinstance(saved, Mapping):
            return
        for name in ("shown", "shown_bytes"):
            counts = saved.get(name)
            if isinstance(counts, Mapping):
                setattr(self, name, {str(k): v for k, v in counts.items() if isinstance(v, int)})
        self.done = {str(d) for d in saved.get("done") or ()}
        self.used = int(saved.get("used") or 0)
        self.lines = int(saved.get("lines") or 0)
        self.truncated = bool(saved.get("truncated"))

    def _save(self) -> None:
        if self.store is not None:
            self.store.set(
                STATE_KEY,
                {
                    "shown": dict(self.shown),
                    "shown_bytes": dict(self.shown_bytes),
                    "done": sorted(self.done),
                    "used": self.used,
                    "lines": self.lines,
                    "truncated": self.truncated,
                },
            )

    @property
    def active(self) -> bool:
        """Whether lines may still be shown."""
        return self.enabled and not self.truncated

    def pending(self, jobs: Iterable[Mapping[str, Any]]) -> list[str]:
        """Ids of the jobs to follow: not done, with a log (not created or skipped), unfinished first;
        at most :data:`MAX_FOLLOWED_JOBS`; none when following is off or the budget is used up."""
        if not self.active:
            return []
        unfinished: list[str] = []
        finished: list[str] = []
        for job in api.latest_attempts(jobs) if jobs else []:
            job_id, status = job.get(api.JOB_ID), str(job.get(api.JOB_STATUS, "")).lower()
            if job_id is None or str(job_id) in self.done or status in _STATUSES_WITHOUT_LOG:
                continue
            try:
                terminal = api.JobStatus.parse(status).is_terminal
            except ValueError:
                terminal = False
            (finished if terminal else unfinished).append(str(job_id))
        return (unfinished + finished)[:MAX_FOLLOWED_JOBS]

    def _cap(self, job_id: str) -> int:
        """The bytes a stream of ``job_id`` may read: what was shown of it plus what the budget has left."""
        return self.shown_bytes.get(job_id, 0) + max(0, self.budget_bytes - self.used) + 1

    def _line(self, job_id: str, index: int, line: str) -> bool:
        """Show line ``index`` of ``job_id`` unless shown before; ``False`` once the budget is used up."""
        size = len(line.encode("utf-8", errors="replace")) + 1
        with self._lock:
            if index < self.shown.get(job_id, 0):
                return True
            if not self.active:
                return False
            if self.used + size > self.budget_bytes:
                self.truncated = True
                self.logger.warning(
                    "Job logs truncated: the log budget of %d bytes is used up; no more job log lines are "
                    "shown (raise log_budget_bytes, or save whole logs with QuamotionJobArtifactsOperator).",
                    self.budget_bytes,
                )
                return False
            self.used += size
            self.lines += 1
            self.shown[job_id] = index + 1
            self.shown_bytes[job_id] = self.shown_bytes.get(job_id, 0) + size
        self.logger.info("[job %s] %s", job_id, line)
        return True

    def _failed(self, job_id: str, err: BaseException) -> None:
        if job_id not in self._warned:
            self._warned.add(job_id)
            self.logger.warning(
                "Cannot follow the live log of job %s (%s: %s); trying again at the next poll.",
                job_id,
                type(err).__name__,
                err,
            )

    # --- sync ---------------------------------------------------------------------------------------

    def follow(self, hook: Any, jobs: Iterable[Mapping[str, Any]], until: float) -> None:
        """Show the new lines of ``jobs``' live logs as they arrive, until each stream ends or ``until``.

        :param hook: a :class:`~airflow_provider_quamotion.hooks.quamotion.QuamotionHook`.
        :param jobs: the run's jobs, as the last poll listed them.
        :param until: an absolute time (epoch seconds): no stream is read past it.
        """
        ids = self.pending(jobs)
        if not ids or until <= time.time():
            return
        pool = ThreadPoolExecutor(max_workers=len(ids), thread_name_prefix="quamotion-job-log")
        try:
            futures = [pool.submit(self._follow_one, hook, job_id, until) for job_id in ids]
            wait(futures, timeout=max(0.0, until - time.time()) + 1.0)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self._save()

    def _follow_one(self, hook: Any, job_id: str, until: float) -> None:
        stream = hook.stream_job_log(job_id, max_bytes=self._cap(job_id), deadline=until)
        try:
            with contextlib.closing(stream):
                for index, line in enumerate(stream):
                    if not self._line(job_id, index, line):
                        return
        except Exception as err:  # following the logs never fails the wait
            if not isinstance(err, QuamotionError) or time.time() < until:
                self._failed(job_id, err)
            return  # at the deadline: followed again at the next interval
        with self._lock:
            self.done.add(job_id)

    def follow_for(
        self, hook: Any, jobs: Iterable[Mapping[str, Any]], seconds: float, deadline: float | None = None
    ) -> float:
        """:meth:`follow` for up to ``seconds`` (not past ``deadline``); the seconds of them left."""
        start = time.time()
        self.follow(hook, jobs, _until(start, seconds, deadline))
        return max(0.0, start + seconds - time.time())

    def sleep(self, hook: Any, jobs: Iterable[Mapping[str, Any]], seconds: float) -> None:
        """Wait ``seconds`` (between two polls) while showing the jobs' new log lines."""
        left = self.follow_for(hook, jobs, seconds)
        if left > 0:
            time.sleep(left)

    def finish(self, hook: Any, jobs: Iterable[Mapping[str, Any]], deadline: float | None = None) -> None:
        """The run finished: show the last lines of jobs not read to their end (at most
        :data:`DRAIN_SECONDS`, and not past ``deadline``)."""
        self.follow(hook, jobs, _until(time.time(), DRAIN_SECONDS, deadline))
        if self.store is not None:  # the wait is over: a cleared and re-run task starts afresh
            self.store.delete(STATE_KEY)

    # --- async --------------------------------------------------------------------------------------

    async def afollow(
        self, hook: Any, jobs: Iterable[Mapping[str, Any]], until: float, *, wait_for_slot: bool = False
    ) -> None:
        """:meth:`follow` for a trigger: the streams run concurrently on the event loop.

        At most :data:`MAX_ASYNC_STREAMS` streams are open per event loop: when every slot is taken
        (thousands of triggers), this interval follows nothing (the lines show at a later one, or
        at :meth:`afinish`, which waits for a slot), so a busy triggerer spends nothing on it.

        :param hook: a :class:`~airflow_provider_quamotion.hooks.quamotion.QuamotionAsyncHook`.
        :param wait_for_slot: the end of a wait: take a drain slot, waiting (until ``until``) for
            one, rather than skip when no follow slot is free.
        """
        ids = self.pending(jobs)
        if not ids or until <= time.time():
            return
        slots = _slots("drain" if wait_for_slot else "follow")
        if not wait_for_slot and slots.locked():
            return
        tasks = [
            asyncio.create_task(self._afollow_one(hook, job_id, until, slots, wait_for_slot))
            for job_id in ids
        ]
        try:
            await asyncio.wait(tasks, timeout=max(0.0, until - time.time()) + 1.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _afollow_one(
        self, hook: Any, job_id: str, until: float, slots: asyncio.Semaphore, wait: bool
    ) -> None:
        if not wait and slots.locked():
            return  # every follow slot busy: this job's lines show at a later interval
        wait_up_to = min(until - time.time(), DRAIN_SLOT_WAIT_SECONDS if wait else until)
        try:
            await asyncio.wait_for(slots.acquire(), max(0.0, wait_up_to))
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            if wait:
                self.logger.info(
                    "The last log lines of job %s are not shown: the triggerer's log streams are busy "
                    "(the whole log is in Quamotion Cloud).",
                    job_id,
                )
            return  # every stream slot busy: next time, or not at all at the end
        stream = hook.stream_job_log(job_id, max_bytes=self._cap(job_id), deadline=until)
        try:
            async with contextlib.aclosing(stream):
                index = 0
                async for line in stream:
                    if not self._line(job_id, index, line):
                        return
                    index += 1
        except Exception as err:  # following the logs never fails the wait
            if not isinstance(err, QuamotionError) or time.time() < until:
                self._failed(job_id, err)
            return
        finally:
            slots.release()
        with self._lock:
            self.done.add(job_id)

    async def afollow_for(
        self, hook: Any, jobs: Iterable[Mapping[str, Any]], seconds: float, deadline: float | None = None
    ) -> float:
        """:meth:`afollow` for up to ``seconds`` (not past ``deadline``); the seconds of them left."""
        start = time.time()
        await self.afollow(hook, jobs, _until(start, seconds, deadline))
        return max(0.0, start + seconds - time.time())

    async def afinish(
        self, hook: Any, jobs: Iterable[Mapping[str, Any]], deadline: float | None = None
    ) -> None:
        """:meth:`finish` for a trigger."""
        await self.afollow(hook, jobs, _until(time.time(), DRAIN_SECONDS, deadline), wait_for_slot=True)


__all__ = [
    "DEFAULT_LOG_BUDGET_BYTES",
    "DRAIN_SECONDS",
    "MAX_FOLLOWED_JOBS",
    "POKE_FOLLOW_SECONDS",
    "JobLogFollower",
    "LineSplitter",
    "check_log_budget",
]
