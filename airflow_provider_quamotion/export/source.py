"""Record streams: what an export reads from the API, one record at a time.

Lists are parsed incrementally from the socket (:meth:`QuamotionHook.iter_records`, ``ijson``), so an
export never holds a whole reply. ``jobs`` fans out one request per test run in the window through
the async client (:meth:`QuamotionHook.async_twin`: the same settings, policy and token cache) on an
event loop of its own thread, while the rows are written on the caller's: at most
``max_concurrency`` requests are on the wire (a request waiting between retries gives its slot to
another), results come back in run order and only a bounded number of runs
(``IN_FLIGHT_PER_WORKER`` per slot) is ever ahead of the one written, so memory stays flat however
many runs there are, and one slow request does not hold the others up. When the export fails, the
runs still in flight are cancelled and no further request is sent.

Why the async client: a thread per request slot of the sync client spends ~0.5-0.7 ms of CPU per
request (requests, urllib3, the GIL shared by dozens of threads), which caps one worker near 1,500
requests/s; ``aiohttp`` spends ~0.1 ms.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionResponseError
from airflow_provider_quamotion.export.window import Window, scheduled_of
from airflow_provider_quamotion.tuning import relaxed_gc

if TYPE_CHECKING:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Runs whose jobs are requested ahead of the one being written, per request slot: the bounded
#: reorder buffer that lets completed work run ahead while one request waits on a retry (its backoff
#: can be a second or more: at 20 ms a request, 8 slots need ~400 runs of work ahead to stay busy).
#: Each held run is one small job list, so memory is bounded by this window, never by the export's size.
IN_FLIGHT_PER_WORKER = 64


class Row(NamedTuple):
    """One exported record and, for windowed resources, the ``scheduled`` time it is windowed on.

    :param record: the record as the API served it (a job row has its run's ``testRunId`` first).
    :param scheduled: the test run's ``scheduled`` time (UTC) for ``test_runs`` and ``jobs``, else ``None``.
    """

    record: Any
    scheduled: dt.datetime | None


def resolve_resource(resource: str | None, endpoint: str | None) -> api.Resource | None:
    """The :data:`api.RESOURCES` entry for ``resource``; ``None`` when ``endpoint`` is used instead."""
    if resource and endpoint:
        raise QuamotionConfigError("Pass either resource= or endpoint=, not both.")
    if endpoint:
        return None
    if not resource:
        raise QuamotionConfigError(
            f"resource= is required: one of {', '.join(api.RESOURCES)} (or endpoint=)."
        )
    try:
        return api.RESOURCES[resource]
    except KeyError:
        raise QuamotionConfigError(
            f"Unknown resource {resource!r}; known: {', '.join(api.RESOURCES)}. "
            "For any other list endpoint pass endpoint= (and record_path= if the array is nested)."
        ) from None


def iter_rows(
    hook: QuamotionHook,
    resource: api.Resource | None,
    *,
    window: Window,
    endpoint: str | None = None,
    record_path: str | None = None,
    params: Mapping[str, Any] | None = None,
    max_concurrency: int = 8,
) -> Generator[Row, None, None]:
    """Stream the rows of an export, in the order the API serves them (jobs: run order, then job order).

    :param hook: the hook (its pool should hold ``max_concurrency`` + 1 connections for ``jobs``).
    :param resource: a known resource, or ``None`` with ``endpoint``.
    :param window: the ``scheduled`` window (windowed resources only).
    :param endpoint: any list endpoint, when ``resource`` is ``None``.
    :param record_path: dotted path of the array in ``endpoint``'s reply.
    :param params: query parameters of the list request.
    :param max_concurrency: parallel job-list requests for ``jobs``.
    """
    if resource is None:
        if window.bounded:
            raise QuamotionConfigError(
                "since/until filter test runs on 'scheduled'; they apply to resource='test_runs' or "
                "'jobs', not to endpoint=."
            )
        if not endpoint:
            raise QuamotionConfigError("endpoint= is required when resource= is not given.")
        for record in hook.iter_records(endpoint, params=params, record_path=record_path):
            yield Row(record, None)
        return
    if not resource.windowed:
        if window.bounded:
            raise QuamotionConfigError(
                f"since/until filter test runs on 'scheduled'; resource {resource.name!r} has no such time. "
                "Use them with 'test_runs' or 'jobs'."
            )
        for record in hook.iter_records(resource.endpoint, params=params, record_path=record_path):
            yield Row(record, None)
        return
    runs = _runs_in_window(hook, resource.endpoint, window, params, record_path)
    if resource.name == "jobs":
        yield from _jobs_of(hook, runs, max_concurrency)
    else:
        yield from runs


def _runs_in_window(
    hook: QuamotionHook,
    endpoint: str,
    window: Window,
    params: Mapping[str, Any] | None,
    record_path: str | None,
) -> Iterator[Row]:
    # an offsetless ``scheduled`` is wall-clock time in the connection's scheduled_timezone
    naive_tz = getattr(getattr(hook, "settings", None), "scheduled_tzinfo", dt.timezone.utc)
    for record in hook.iter_records(endpoint, params=params, record_path=record_path):
        when = scheduled_of(record, naive_tz)
        if window.contains(when):
            yield Row(record, when)


def _jobs_of(hook: QuamotionHook, runs: Iterable[Row], max_concurrency: int) -> Iterator[Row]:
    def run_id(row: Row) -> str:
        value = row.record.get(api.TEST_RUN_ID) if isinstance(row.record, Mapping) else None
        if not value:
            raise QuamotionResponseError(
                f"A test run in the list has no {api.TEST_RUN_ID!r}: {str(row.record)[:200]}"
            )
        return str(value)

    twin = hook.async_twin(max_concurrency)  # max_concurrency connections: the requests on the wire

    async def fetch(row: Row) -> list[Any]:
        return await twin.list_jobs(run_id(row))

    mapped = ordered_map(fetch, runs, in_flight=IN_FLIGHT_PER_WORKER * max_concurrency, close=twin.aclose)
    try:
        for row, jobs in mapped:
            rid = run_id(row)
            for job in jobs:
                body = (
                    {k: v for k, v in job.items() if k != api.TEST_RUN_ID} if isinstance(job, Mapping) else {}
                )
                yield Row({api.TEST_RUN_ID: rid, **body}, row.scheduled)
    finally:
        mapped.close()  # an early exit (error, close()) stops the requests now, not at garbage collection


class _Carried(Exception):
    """A ``KeyboardInterrupt``/``SystemExit`` of an item, carried from the map's event loop (where it
    would stop the loop and leave the caller waiting) to the caller's thread, and raised there."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


class _LoopThread:
    """An ``asyncio`` event loop running on a daemon thread of its own (a fan-out's requests)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="quamotion-export", daemon=True)
        self.thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, R]) -> concurrent.futures.Future[R]:
        """Run ``coroutine`` on the loop; its future (``cancel()`` cancels the task)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self, last: Callable[[], Awaitable[None]] | None = None, timeout: float = 30.0) -> None:
        """Cancel what still runs, await ``last()`` (closing a pool), stop the loop and its thread."""

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if last is not None:
                await last()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout)
            if not self.thread.is_alive():
                self.loop.close()


def ordered_map(
    fn: Callable[[T], Coroutine[Any, Any, R]],
    items: Iterable[T],
    *,
    in_flight: int,
    close: Callable[[], Awaitable[None]] | None = None,
) -> Generator[tuple[T, R], None, None]:
    """``(item, await fn(item))`` for each item, in input order; ``fn`` runs on an event loop of its own.

    Up to ``in_flight`` items are started ahead of the one being yielded: while one slow item (a
    request waiting on a retry) holds the head, the others go on within that window, so a stall
    costs about one slow item, not one per window. The window bounds memory: neither the input nor
    the results are ever materialised. The input is consumed lazily on the caller's thread.

    A failure raises from the item that failed. Leaving early (an error, ``close()``) cancels every
    item still running (no further request is sent) and returns once the loop has stopped.

    :param fn: the coroutine function, run on the map's event loop (on a thread of its own).
    :param items: the inputs.
    :param in_flight: bound on started, not yet yielded items (>= 1).
    :param close: awaited on the loop when the map ends (e.g. a hook's ``aclose``).
    """
    if in_flight < 1:
        raise QuamotionConfigError(f"max_concurrency must be at least 1 (a look-ahead of {in_flight}).")

    async def carried(item: T) -> R:
        try:
            return await fn(item)
        except (KeyboardInterrupt, SystemExit) as error:  # raised in the loop, it would stop the loop
            raise _Carried(error) from None

    def result(future: concurrent.futures.Future[R]) -> R:
        try:
            return future.result()
        except _Carried as carried_error:
            raise carried_error.error from None

    runner = _LoopThread()
    pending: deque[tuple[T, concurrent.futures.Future[R]]] = deque()
    # the requests in flight would otherwise set off full collections of the whole process
    with relaxed_gc():
        try:
            for item in items:
                pending.append((item, runner.submit(carried(item))))
                if len(pending) >= in_flight:
                    head, future = pending.popleft()
                    yield head, result(future)
            while pending:
                head, future = pending.popleft()
                yield head, result(future)
        finally:
            for _, future in pending:
                future.cancel()
            runner.close(close)
