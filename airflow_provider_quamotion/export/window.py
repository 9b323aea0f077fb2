"""The export window: ``[since, until)`` on a test run's ``scheduled`` time.

A ``since`` / ``until`` without an offset is UTC; a test run's ``scheduled`` without one (the API's
list always omits it) is in the connection's ``scheduled_timezone`` (UTC unless set; see
:func:`~airflow_provider_quamotion.api.parse_timestamp`); ``None`` is unbounded. Normalised times (:func:`utc_text`) have a fixed width, so they sort as text: the SQL
loader stores them and deletes a window's rows with plain ``>=`` / ``<`` comparisons.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import pass_context

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError

UTC = dt.timezone.utc
log = logging.getLogger(__name__)


def parse_instant(value: Any, *, name: str = "timestamp", naive_tz: dt.tzinfo = UTC) -> dt.datetime | None:
    """An aware UTC datetime from an ISO string or a datetime; ``None``/``""`` -> ``None``.

    :param value: ``"2024-01-01"``, ``"2024-01-01T00:00:00Z"``, ``"2024-01-01 00:00:00+00:00"``
        (what ``{{ data_interval_start }}`` renders), a ``datetime`` or a ``date``.
    :param name: the argument's name, for the error message.
    :param naive_tz: the zone of a value without an offset (UTC by default).
    :raises QuamotionConfigError: when the value is not a timestamp.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        parsed = value if value.tzinfo is not None else value.replace(tzinfo=naive_tz)
        return parsed.astimezone(UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=naive_tz).astimezone(UTC)
    try:
        return api.parse_timestamp(str(value), naive_tz)
    except ValueError:
        raise QuamotionConfigError(
            f"{name}={value!r} is not an ISO 8601 timestamp; use e.g. '2024-01-31T00:00:00Z' or "
            "'{{ data_interval_start }}'."
        ) from None


def utc_text(value: dt.datetime) -> str:
    """``2024-01-31T06:11:38.000000Z``: fixed width, so normalised times sort as text."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # as strftime has always written them (unpadded on glibc)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # %-formatting: a third of strftime's time (the SQL export writes one per row)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


def scheduled_of(record: Any, naive_tz: dt.tzinfo = UTC) -> dt.datetime | None:
    """A test run's ``scheduled`` time (UTC), or ``None`` when it is missing or not a timestamp.

    :param record: the test run.
    :param naive_tz: the zone of a ``scheduled`` without an offset: the connection's
        ``scheduled_timezone`` (:attr:`QuamotionSettings.scheduled_tzinfo`).
    """
    if not isinstance(record, Mapping):
        return None
    value = record.get(api.TEST_RUN_SCHEDULED)
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return api.parse_timestamp(value, naive_tz)
    except ValueError:
        return None


@dataclass(frozen=True)
class Window:
    """``[since, until)``; either end may be open (``None``).

    :param since: inclusive start (UTC), or ``None``.
    :param until: exclusive end (UTC), or ``None``.
    """

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def of(cls, since: Any = None, until: Any = None) -> Window:
        """Parse both ends (see :func:`parse_instant`); refuses ``until`` before ``since``."""
        window = cls(parse_instant(since, name="since"), parse_instant(until, name="until"))
        if window.since and window.until and window.until < window.since:
            raise QuamotionConfigError(
                f"until ({window.until.isoformat()}) is before since ({window.since.isoformat()})."
            )
        return window

    @property
    def bounded(self) -> bool:
        """Whether either end is set."""
        return self.since is not None or self.until is not None

    def contains(self, when: dt.datetime | None) -> bool:
        """Whether ``when`` is in the window; an unknown time is only in the unbounded window."""
        if when is None:
            return not self.bounded
        if self.since is not None and when < self.since:
            return False
        return not (self.until is not None and when >= self.until)

    def iso(self) -> tuple[str | None, str | None]:
        """Both ends as ISO 8601 strings (for XCom), ``None`` when open."""
        return (
            self.since.isoformat() if self.since else None,
            self.until.isoformat() if self.until else None,
        )

    @property
    def day(self) -> str | None:
        """The window's start day, ``YYYY-MM-DD`` (UTC): the partition a window's file is named after."""
        return self.since.strftime("%Y-%m-%d") if self.since else None


# --- the window of a DAG run ------------------------------------------------------------------------------

_announced: set[tuple[str, str]] = set()


def run_window(context: Mapping[str, Any]) -> Window:
    """The window a DAG run exports: its data interval, or the last complete interval when it has none.

    Scheduled runs, backfills, ``airflow dags test`` and manual runs *with* a date carry a data interval
    (for a manual run with a date, Airflow infers the last complete interval before that date): it is the
    window. A run triggered without a date (the UI's Trigger button, ``airflow dags trigger``,
    ``POST dagRuns`` without ``logical_date``: ``logical_date=None``) has no data interval, and
    ``data_interval_start``, ``ds`` and friends are undefined: the window is then the last complete
    interval of the DAG's timetable before the run's ``run_after`` (what a manual run of a day-late
    schedule would export), and the choice is logged.

    :param context: the task's context (``dag_run``, ``dag``, ``data_interval_start`` ...), or the
        template's (what the :data:`WINDOW_MACROS` receive).
    :raises QuamotionConfigError: when the run has no data interval and the DAG's timetable has no
        intervals (``schedule=None``): pass ``since``/``until`` explicitly there.
    """
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return Window.of(start, end)
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    run_after = getattr(dag_run, "run_after", None) or dt.datetime.now(UTC)
    interval = _last_complete_interval(getattr(dag, "timetable", None), run_after)
    if interval is None:
        raise QuamotionConfigError(
            f"The DAG run {getattr(dag_run, 'run_id', '?')!r} has no data interval (triggered without a "
            "logical date) and its DAG's schedule has no intervals to infer one from; pass since= and "
            "until= explicitly."
        )
    window = Window.of(*interval)
    key = (str(getattr(dag_run, "dag_id", "")), str(getattr(dag_run, "run_id", "")))
    if key not in _announced:
        _announced.add(key)
        since, until = window.iso()
        log.warning(
            "DAG run %s has no logical date (triggered without one): exporting the last complete interval "
            "before %s, [%s, %s).",
            key[1] or "?",
            str(run_after),
            since,
            until,
        )
    return window


def _last_complete_interval(timetable: Any, run_after: Any) -> tuple[dt.datetime, dt.datetime] | None:
    """``(start, end)`` of the last complete interval of ``timetable`` before ``run_after``, if it has one."""
    if timetable is None:
        return None
    import pendulum

    when = pendulum.instance(parse_instant(run_after) or dt.datetime.now(UTC))
    infer = getattr(timetable, "infer_manual_data_interval", None)
    if infer is None:  # a Task SDK timetable: its core counterpart knows the intervals
        try:
            from airflow.serialization.encoders import coerce_to_core_timetable

            infer = coerce_to_core_timetable(timetable).infer_manual_data_interval
        except Exception:  # no core timetable for it: no intervals known
            return None
    interval = infer(run_after=when)
    start, end = interval.start, interval.end
    if start is None or end is None or not start < end:
        return None
    return start, end


def _template_context(ctx: Any) -> dict[str, Any]:
    return {k: ctx.get(k) for k in ("data_interval_start", "data_interval_end", "dag_run", "dag")}


@pass_context
def export_window(ctx: Any) -> Window:
    """Jinja macro: the run's :func:`run_window` (``{{ export_window().since }}``, ``.until``, ``.day``)."""
    return run_window(_template_context(ctx))


#: Give these to a DAG's ``user_defined_macros``: ``since="{{ export_window().since }}"``,
#: ``until="{{ export_window().until }}"``, ``destination=".../dt={{ export_window().day }}/..."``.
#: They work for scheduled, backfilled and manual runs, with a date and without.
WINDOW_MACROS: dict[str, Any] = {"export_window": export_window}
