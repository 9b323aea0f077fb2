"""Record streams: what an export reads from the API, one record at a time.

Lists are parsed incrementally from the socket (:meth:`QuamotionHook.iter_records`, ``ijson``), so an
export never holds a whole reply. ``jobs`` fans out one request per test run in the window over a
bounded thread pool that shares the hook's token and connection pool; results come back in run order
and only a bounded number of runs is ever in flight, so memory stays flat however many runs there are.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionResponseError
from airflow_provider_quamotion.export.window import Window, scheduled_of

if TYPE_CHECKING:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Runs whose jobs are requested ahead of the one being written, per worker.
IN_FLIGHT_PER_WORKER = 2


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
    for record in hook.iter_records(endpoint, params=params, record_path=record_path):
        when = scheduled_of(record)
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

    for row, jobs in ordered_map(fetch, runs, workers=max_concurrency):
        rid = run_id(row)
        for job in jobs:
            body = {k: v for k, v in job.items() if k != api.TEST_RUN_ID} if isinstance(job, Mapping) else {}
            yield Row({api.TEST_RUN_ID: rid, **body}, row.scheduled)


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, in_flight: int | None = None
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` for each item, in input order, computed on ``workers`` threads.

    At most ``in_flight`` items (default ``IN_FLIGHT_PER_WORKER * workers``) are submitted ahead of
    the one being yielded, so neither the input nor the results are ever materialised. A failure
    raises from the item that failed; leaving early (an error, ``close()``) cancels what is queued.

    :param fn: the function, called on a worker thread.
    :param items: the inputs, consumed lazily on the caller's thread.
    :param workers: threads (>= 1).
    :param in_flight: bound on submitted, not yet yielded items.
    """
    if workers < 1:
        raise QuamotionConfigError(f"max_concurrency must be at least 1, not {workers}.")
    limit = max(workers, in_flight or IN_FLIGHT_PER_WORKER * workers)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="quamotion-export")
    pending: deque[tuple[T, Future[R]]] = deque()
    completed = False
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= limit:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
        completed = True
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=completed, cancel_futures=True)
