"""Record streams: what an export reads from the API, one record at a time.

Lists are parsed incrementally from the socket (:meth:`QuamotionHook.iter_records`, ``ijson``), so an
export never holds a whole reply. ``jobs`` fans out one request per test run in the window over a
bounded thread pool that shares the hook's token and connection pool; at most ``max_concurrency``
requests are on the wire (a request waiting between retries gives its slot to another), results come
back in run order and only a bounded number of runs (``IN_FLIGHT_PER_WORKER`` per slot) is ever
ahead of the one written, so memory stays flat however many runs there are, and one slow request
does not hold the others up. When the
export fails, queued runs are cancelled and the workers send no further request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from requests.adapters import BaseAdapter

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionResponseError
from airflow_provider_quamotion.export.window import Window, scheduled_of

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
#: Threads per request slot of the jobs fan-out. A request waiting between retries holds a thread
#: but not a slot (the slot is taken for each attempt only), so the other threads keep every slot
#: busy: with 20% of requests failing and ~0.1-0.5 s backoffs, about two threads per slot wait at
#: any time. ``max_concurrency`` bounds the requests on the wire, never the waits.
THREADS_PER_SLOT = 4
#: At most this many threads wait on retries beyond the slots, whatever ``max_concurrency``.
MAX_WAITING_THREADS = 64


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

    def fetch(row: Row) -> list[Any]:
        return hook.list_jobs(run_id(row))

    _stop_on_cancel(hook)
    waiting = min(MAX_WAITING_THREADS, (THREADS_PER_SLOT - 1) * max_concurrency)
    mapped = ordered_map(
        fetch,
        runs,
        workers=max_concurrency + waiting,
        in_flight=IN_FLIGHT_PER_WORKER * max_concurrency,
        slots=threading.BoundedSemaphore(max_concurrency),
    )
    try:
        for row, jobs in mapped:
            rid = run_id(row)
            for job in jobs:
                body = (
                    {k: v for k, v in job.items() if k != api.TEST_RUN_ID} if isinstance(job, Mapping) else {}
                )
                yield Row({api.TEST_RUN_ID: rid, **body}, row.scheduled)
    finally:
        mapped.close()  # an early exit (error, close()) stops the workers now, not at garbage collection


class ExportCancelled(Exception):
    """Raised on a worker thread whose export has stopped (failed or closed): no request is sent.

    Deliberately not a ``requests`` exception, so the transport does not retry it.
    """


_worker = threading.local()


def _check_stopped() -> None:
    """Raise :class:`ExportCancelled` when this thread is a fan-out worker whose export has stopped."""
    stop: threading.Event | None = getattr(_worker, "stop", None)
    if stop is not None and stop.is_set():
        raise ExportCancelled("the export stopped; this request is not sent")


def _slot() -> contextlib.AbstractContextManager[Any]:
    """This fan-out worker's request slot (held for one attempt), or nothing off the fan-out."""
    slots: threading.Semaphore | None = getattr(_worker, "slots", None)
    return slots if slots is not None else contextlib.nullcontext()


class _StopAwareAdapter(BaseAdapter):
    """Wraps a session's adapter: a stopped export's workers send nothing more.

    Checked before every attempt (so a worker waiting between retries gives up at its next attempt)
    and after it (a reply that arrives after the stop is dropped, not retried or logged). A worker
    of a fan-out with request slots (:func:`ordered_map`'s ``slots``) holds one for each attempt, not
    while it waits between retries. Requests of other threads (the run list on the caller's thread)
    are untouched.
    """

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        _check_stopped()
        try:
            with _slot():
                _check_stopped()  # the export may have stopped while this worker waited for a slot
                response = self.inner.send(request, *args, **kwargs)
        except Exception:
            _check_stopped()
            raise
        try:
            _check_stopped()
        except ExportCancelled:
            response.close()
            raise
        return response

    def close(self) -> None:
        self.inner.close()


def _stop_on_cancel(hook: Any) -> None:
    """Wrap the adapters of ``hook``'s session (once) so stopped workers send no request."""
    session = hook.get_conn() if callable(getattr(hook, "get_conn", None)) else None
    adapters = getattr(session, "adapters", None)
    if session is None or not isinstance(adapters, Mapping):  # a test double without a requests session
        return
    for prefix, adapter in list(adapters.items()):
        if not isinstance(adapter, _StopAwareAdapter):
            session.mount(prefix, _StopAwareAdapter(adapter))


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    workers: int,
    in_flight: int | None = None,
    stop: threading.Event | None = None,
    slots: threading.Semaphore | None = None,
) -> Generator[tuple[T, R], None, None]:
    """``(item, fn(item))`` for each item, in input order, computed on ``workers`` threads.

    Up to ``in_flight`` items (default ``IN_FLIGHT_PER_WORKER * workers``) are submitted ahead of the
    one being yielded: while one slow item (a request waiting on a retry) holds the head, the other
    workers keep going through the look-ahead window, so a stall costs about one slow item, not one
    per window. The window bounds memory: neither the input nor the results are ever materialised.

    A failure raises from the item that failed. Leaving early (an error, ``close()``) sets ``stop``,
    cancels what is queued and returns without waiting for the workers: ``fn`` is not called again,
    and a worker inside ``fn`` sees ``stop`` set (a :func:`_stop_on_cancel` session sends nothing more).

    :param fn: the function, called on a worker thread.
    :param items: the inputs, consumed lazily on the caller's thread.
    :param workers: threads (>= 1).
    :param in_flight: bound on submitted, not yet yielded items.
    :param stop: set when the map ends early; visible to ``fn`` as the worker's stop event.
    :param slots: request slots shared by the workers: a :func:`_stop_on_cancel` session takes one
        for each attempt it sends (so ``workers`` may exceed the requests allowed on the wire).
    """
    if workers < 1:
        raise QuamotionConfigError(f"max_concurrency must be at least 1, not {workers}.")
    limit = max(workers, in_flight or IN_FLIGHT_PER_WORKER * workers)
    stop = stop if stop is not None else threading.Event()

    def call(item: T) -> R:
        if stop.is_set():
            raise ExportCancelled("the export stopped; this item is skipped")
        _worker.stop, _worker.slots = stop, slots
        try:
            return fn(item)
        finally:
            _worker.stop = _worker.slots = None

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quamotion-export")
    pending: deque[tuple[T, Future[R]]] = deque()
    completed = False
    try:
        for item in items:
            pending.append((item, pool.submit(call, item)))
            if len(pending) >= limit:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
        completed = True
    finally:
        if not completed:
            stop.set()
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=completed, cancel_futures=True)
