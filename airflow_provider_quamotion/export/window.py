"""The export window: ``[since, until)`` on a test run's ``scheduled`` time.

A timestamp without an offset is UTC (the API's list sometimes omits ``+00:00``); ``None`` is
unbounded. Normalised times (:func:`utc_text`) have a fixed width, so they sort as text: the SQL
loader stores them and deletes a window's rows with plain ``>=`` / ``<`` comparisons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError

UTC = dt.timezone.utc


def parse_instant(value: Any, *, name: str = "timestamp") -> dt.datetime | None:
    """An aware UTC datetime from an ISO string or a datetime (naive = UTC); ``None``/``""`` -> ``None``.

    :param value: ``"2024-01-01"``, ``"2024-01-01T00:00:00Z"``, ``"2024-01-01 00:00:00+00:00"``
        (what ``{{ data_interval_start }}`` renders), a ``datetime`` or a ``date``.
    :param name: the argument's name, for the error message.
    :raises QuamotionConfigError: when the value is not a timestamp.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    else:
        text = str(value).strip()
        try:
            parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise QuamotionConfigError(
                f"{name}={value!r} is not an ISO 8601 timestamp; use e.g. '2024-01-31T00:00:00Z' or "
                "'{{ data_interval_start }}'."
            ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_text(value: dt.datetime) -> str:
    """``2024-01-31T06:11:38.000000Z``: fixed width, so normalised times sort as text."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def scheduled_of(record: Any) -> dt.datetime | None:
    """A test run's ``scheduled`` time (UTC), or ``None`` when it is missing or not a timestamp."""
    if not isinstance(record, Mapping):
        return None
    try:
        return parse_instant(record.get(api.TEST_RUN_SCHEDULED))
    except QuamotionConfigError:
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
