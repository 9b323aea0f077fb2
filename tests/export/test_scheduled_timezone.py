"""The connection's ``scheduled_timezone``: windows, ``_scheduled_utc`` and the typed ``scheduled`` follow it.

An offsetless ``scheduled`` (every captured value) is wall-clock time in that zone; UTC unless set.
Unit tests feed the captured shapes through :func:`iter_rows` and the SQL loader; the sandbox tests
run the export operator with ``hook_params={"scheduled_timezone": ...}`` against the sandbox (which
writes UTC wall-clock values, so a zone of UTC+9 shifts every run nine hours earlier).
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.export.columns import Columns
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.source import iter_rows as _iter_rows
from airflow_provider_quamotion.export.sql import load_table
from airflow_provider_quamotion.export.window import Window, parse_instant, scheduled_of, utc_text
from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
from airflow_provider_quamotion.sandbox import Sandbox
from tests.captured_runs import LOCAL_TIME_RUNS, SCHEDULED_VS_STARTED

UTC = dt.timezone.utc
TOKYO = dt.timedelta(hours=9)


class FakeHook:
    """What ``iter_rows`` reads of a hook: its settings' zone and a streamed list."""

    def __init__(self, records: list[dict[str, Any]], zone: str = "UTC") -> None:
        self.records = records
        self.settings = SimpleNamespace(scheduled_tzinfo=api.zone(zone))

    def iter_records(self, endpoint: str, **_: Any) -> Iterator[dict[str, Any]]:
        assert endpoint == api.TEST_RUNS
        return iter(self.records)


def iter_rows(hook: Any, resource: api.Resource, *, window: Window) -> Iterator[Row]:
    """:func:`iter_rows` on a :class:`FakeHook`."""
    return _iter_rows(hook, resource, window=window)


def captured_runs() -> list[dict[str, Any]]:
    return [
        {"testRunId": rid, "scheduled": scheduled, "jobs": []}
        for rid, scheduled, _, _ in SCHEDULED_VS_STARTED
    ]


def ids(rows: Any) -> list[str]:
    return [r.record["testRunId"] for r in rows]


def test_scheduled_of_follows_the_zone() -> None:
    run = {"scheduled": "2018-03-16T05:53:12"}
    assert scheduled_of(run) == dt.datetime(2018, 3, 16, 5, 53, 12, tzinfo=UTC)
    assert scheduled_of(run, api.zone("Europe/Brussels")) == dt.datetime(2018, 3, 16, 4, 53, 12, tzinfo=UTC)
    assert scheduled_of({"scheduled": "2018-03-16T05:53:12+00:00"}, api.zone("Europe/Brussels")) == (
        dt.datetime(2018, 3, 16, 5, 53, 12, tzinfo=UTC)
    )
    assert scheduled_of({"scheduled": None}) is None and scheduled_of({"scheduled": "soon"}) is None


def test_window_bounds_stay_utc_whatever_the_zone() -> None:
    assert parse_instant("2018-03-16T05:00:00") == dt.datetime(2018, 3, 16, 5, tzinfo=UTC)
    assert Window.of("2018-03-16T05:00:00").since == dt.datetime(2018, 3, 16, 5, tzinfo=UTC)


def test_a_zone_moves_captured_runs_across_the_window_edge() -> None:
    # [04:45, 05:00) UTC on 16 March 2018: which captured runs fall in it depends on the zone
    window = Window.of("2018-03-16T04:45:00Z", "2018-03-16T05:00:00Z")
    as_utc = ids(iter_rows(FakeHook(captured_runs()), api.RESOURCES["test_runs"], window=window))
    local = ids(
        iter_rows(FakeHook(captured_runs(), "Europe/Brussels"), api.RESOURCES["test_runs"], window=window)
    )
    assert as_utc == []
    assert set(local) == {"b56a6d2b-386a-456a-8582-0fa51f587b9b", "b4eaa9d7-85e0-446f-a5c6-db99d2fc0fd7"}
    assert set(local) < LOCAL_TIME_RUNS  # 1132381f is at 04:41:55 UTC, before the window


def test_windows_across_a_dst_change() -> None:
    runs = [
        {"testRunId": "before", "scheduled": "2018-10-28T01:30:00"},  # 23:30 UTC the day before (CEST)
        {"testRunId": "twice", "scheduled": "2018-10-28T02:30:00"},  # first occurrence: 00:30 UTC
        {"testRunId": "after", "scheduled": "2018-10-28T03:30:00"},  # 02:30 UTC (CET)
    ]
    day = Window.of("2018-10-28T00:00:00Z", "2018-10-29T00:00:00Z")
    hook = FakeHook(runs, "Europe/Brussels")
    rows = list(iter_rows(hook, api.RESOURCES["test_runs"], window=day))
    assert ids(rows) == ["twice", "after"]
    assert [r.scheduled and utc_text(r.scheduled) for r in rows] == [
        "2018-10-28T00:30:00.000000Z",
        "2018-10-28T02:30:00.000000Z",
    ]
    assert ids(iter_rows(FakeHook(runs), api.RESOURCES["test_runs"], window=day)) == [
        "before",
        "twice",
        "after",
    ]


@pytest.fixture
def lite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    from airflow.providers.sqlite.hooks.sqlite import SqliteHook

    db = tmp_path / "warehouse.db"
    monkeypatch.setenv("AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    return SqliteHook(sqlite_conn_id="lite"), db


@pytest.mark.parametrize(("zone", "hour"), [("UTC", "05"), ("Europe/Brussels", "04"), ("Asia/Tokyo", "20")])
def test_sql_scheduled_utc_and_typed_scheduled_follow_the_zone(
    lite: tuple[Any, Path], zone: str, hour: str
) -> None:
    hook, db = lite
    run = {
        "testRunId": "b56a6d2b-386a-456a-8582-0fa51f587b9b",
        "scheduled": "2018-03-16T05:53:12",
        "jobs": [],
    }
    source = FakeHook([run], zone)
    rows = iter_rows(source, api.RESOURCES["test_runs"], window=Window())
    columns = Columns(None, api.RESOURCES["test_runs"].fields, api.FIELD_TYPES["test_runs"])
    tz = source.settings.scheduled_tzinfo
    assert load_table(hook, "runs", rows, columns, windowed=True, window=Window(), scheduled_tz=tz) == 1
    day = "2018-03-15" if zone == "Asia/Tokyo" else "2018-03-16"
    with sqlite3.connect(db) as conn:
        scheduled, scheduled_utc, record = conn.execute(
            "SELECT scheduled, _scheduled_utc, _record FROM runs"
        ).fetchone()
    assert scheduled == scheduled_utc == f"{day}T{hour}:53:12.000000Z"
    assert json.loads(record)["scheduled"] == "2018-03-16T05:53:12"  # the record as served


# --- against the sandbox ---------------------------------------------------------------------------


@pytest.mark.integration
def test_export_window_follows_the_connection_zone(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    since = api.parse_timestamp(sandbox_conn.data.run(100)["scheduled"])
    until = api.parse_timestamp(sandbox_conn.data.run(160)["scheduled"])
    as_tokyo, as_utc = tmp_path / "tokyo.jsonl", tmp_path / "utc.jsonl"
    for target, params in ((as_tokyo, {"scheduled_timezone": "Asia/Tokyo"}), (as_utc, None)):
        QuamotionExportOperator(
            task_id="t",
            resource="test_runs",
            destination=str(target),
            since=since,
            until=until,
            hook_params=params,
        ).execute({})
    got = [json.loads(line) for line in as_tokyo.read_text().splitlines()]
    # a wall-clock value w read in UTC+9 is the instant w - 9 h: in [since, until) when w is in [since + 9 h, until + 9 h)
    assert got == list(sandbox_conn.expected_test_runs(since + TOKYO, until + TOKYO))
    assert [json.loads(line) for line in as_utc.read_text().splitlines()] == list(
        sandbox_conn.expected_test_runs(since, until)
    )
    assert got and got != [json.loads(line) for line in as_utc.read_text().splitlines()]


@pytest.mark.integration
def test_sql_export_scheduled_utc_follows_the_connection_zone(
    sandbox_conn: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "w.db"
    monkeypatch.setenv("AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    since = sandbox_conn.data.run(200)["scheduled"]
    until = sandbox_conn.data.run(220)["scheduled"]
    QuamotionExportOperator(
        task_id="t",
        resource="test_runs",
        sql_conn_id="lite",
        table="runs",
        since=since,
        until=until,
        hook_params={"scheduled_timezone": "Asia/Tokyo"},
    ).execute({})
    expected = list(
        sandbox_conn.expected_test_runs(
            api.parse_timestamp(since) + TOKYO, api.parse_timestamp(until) + TOKYO
        )
    )
    with sqlite3.connect(db) as conn:
        got = dict(conn.execute('SELECT "testRunId", _scheduled_utc FROM runs').fetchall())
    assert got == {r["testRunId"]: utc_text(api.parse_timestamp(r["scheduled"]) - TOKYO) for r in expected}
    assert len(got) == 20
