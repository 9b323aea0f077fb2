"""PostgreSQL's COPY text, as the SQL export writes it row by row (``sql._copy_encoder``).

The encoder takes short ways for the usual values (text as it is, escapes checked once per row, an
``int``, an offsetless UTC timestamp); every line must equal what the per-value rule gives
(:func:`sql._adapter` then :func:`sql._copy_text`): odd values, values that do not fit their column
(NULL, counted), special characters, offsetless timestamps in a zone other than UTC. Then the same
rows go through a real PostgreSQL ``COPY`` and come back as they were.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.export import sql
from airflow_provider_quamotion.export.columns import MISFIT, Columns
from airflow_provider_quamotion.export.source import Row
from airflow_provider_quamotion.export.window import Window, utc_text

UTC = dt.timezone.utc
SCHEDULED = api.TEST_RUN_SCHEDULED

#: Values of every shape a JSON reply can hold, and some it cannot (a date, a str subclass).
ODD_VALUES: list[Any] = [
    None,
    "",
    "plain",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",  # the text backslash-N, not NULL
    "é ✓ \u2028",
    0,
    -(2**63),
    2**63,
    True,
    False,
    1.5,
    42.0,
    float("nan"),
    float("inf"),
    "42",
    " 7 ",
    "1.5",
    "true",
    "abc",
    [],
    ["a\\b", "t\tb"],
    {"k": "v\nw", "n": None},
    "2024-01-01T08:30:00",
    "2024-01-01T08:30:00.250",
    "2024-01-01",
    "2024-01-01T08:30:00Z",
    "2024-01-01T11:00:00+02:00",
    " 2024-01-01T08:30:00 ",
    "2024-03-31T02:30:00",  # skipped by Brussels' clocks
    "2024-10-27T02:30:00",  # twice in Brussels
    "soon",
    dt.date(2024, 1, 2),
    type("Sub", (str,), {})("a str subclass\t"),
]

ZONES: list[dt.tzinfo] = [
    UTC,
    dt.timezone(dt.timedelta(0)),
    ZoneInfo("Europe/Brussels"),
    ZoneInfo("Asia/Tokyo"),
]


def reference_line(
    names: list[str], kinds: dict[str, str], zones: dict[str, dt.tzinfo], columns: Columns, row: Row
) -> tuple[str, list[str]]:
    """The line by the per-value rule, and the columns whose value did not fit."""
    every = list(columns.names or ())
    values = dict(zip(every, columns.values(row.record), strict=True))
    cells, misfit = [], []
    for name in names:
        converted = sql._adapter("postgres", kinds[name], zones[name])(values[name])
        if converted is MISFIT:
            misfit.append(name)
            converted = None
        cells.append(sql._copy_text(converted))
    cells.append(sql._copy_text(None if row.scheduled is None else utc_text(row.scheduled)))
    cells.append(sql._copy_text(sql.to_json(row.record)))
    return "\t".join(cells), misfit


def odd_records() -> list[Any]:
    """Test runs with each odd value in each column, and records of other shapes."""
    base = {f: "x" for f in api.TEST_RUN_FIELDS}
    records: list[Any] = [{f: v for f in api.TEST_RUN_FIELDS} for v in ODD_VALUES]
    records += [{**base, field: value} for field in api.TEST_RUN_FIELDS for value in ODD_VALUES]
    records += [
        {SCHEDULED: "2024-01-01T08:30:00"},  # keys missing
        {**base, "extra": "kept in _record only"},  # a key outside the columns
        dict(reversed(list(base.items()))),  # another key order
        "a bare value",
    ]
    return records


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_copy_lines_equal_the_per_value_rule(zone: dt.tzinfo, caplog: pytest.LogCaptureFixture) -> None:
    columns = Columns(None, api.RESOURCES["test_runs"].fields, api.FIELD_TYPES["test_runs"])
    columns.fix(None)
    names = list(columns.names or ())
    kinds = {n: columns.type_of(n) for n in names}
    zones = {n: zone if n == SCHEDULED else UTC for n in names}
    misfits: dict[str, int] = {}
    order, line = sql._copy_encoder(names, kinds, zones, columns, True, misfits)
    assert order == sorted(names, key=lambda n: kinds[n] != "text")  # text columns first
    expected: dict[str, int] = {}
    when = dt.datetime(2024, 1, 1, 8, 30, tzinfo=UTC)
    with caplog.at_level(logging.WARNING):
        for i, record in enumerate(odd_records()):
            row = Row(record, None if i % 7 == 0 else when + dt.timedelta(microseconds=i))
            want, misfit = reference_line(order, kinds, zones, columns, row)
            assert line(row) == want, record
            for name in misfit:
                expected[name] = expected.get(name, 0) + 1
    assert misfits == expected
    assert set(misfits) == {"operatingSystem", SCHEDULED, "scheduleId"}  # the typed columns but JSON
    assert "'extra'" in caplog.text  # the key outside the columns is named, as for every format


def test_copy_lines_without_text_columns_or_window() -> None:
    columns = Columns(["n", "at"], types={"n": "integer", "at": "timestamp"})
    names = ["n", "at"]
    kinds = {"n": "integer", "at": "timestamp"}
    misfits: dict[str, int] = {}
    order, line = sql._copy_encoder(names, kinds, dict.fromkeys(names, UTC), columns, False, misfits)
    assert order == names
    assert line(Row({"n": 5, "at": "2024-01-01T08:30:00"}, None)) == (
        '5\t2024-01-01T08:30:00+00:00\t{"n":5,"at":"2024-01-01T08:30:00"}'
    )
    assert line(Row({"n": "x", "at": "no"}, None)) == '\\N\t\\N\t{"n":"x","at":"no"}'
    assert misfits == {"n": 1, "at": 1}
    text = Columns(["only"])
    order, line = sql._copy_encoder(["only"], {"only": "text"}, {"only": UTC}, text, False, {})
    assert line(Row({"only": "a\tb"}, None)) == 'a\\tb\t{"only":"a\\\\tb"}'
    assert line(Row({"only": None}, None)) == '\\N\t{"only":null}'


@pytest.fixture
def pg(pg_database: str) -> tuple[Any, str]:
    from airflow.models.connection import Connection
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(connection=Connection(conn_id="warehouse", uri=pg_database)), pg_database


def pg_query(uri: str, query: str) -> list[tuple[Any, ...]]:
    import psycopg2

    with psycopg2.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(query)
        return cur.fetchall()


@pytest.mark.postgres
@pytest.mark.parametrize("zone", ["UTC", "Europe/Brussels", "Asia/Tokyo"])
def test_postgres_copy_keeps_odd_values_and_the_zone(
    pg: tuple[Any, str], zone: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook, uri = pg
    tz = api.zone(zone)
    special = "tab\there, new\nline, cr\r, back\\slash, \\N, é"
    runs: list[dict[str, Any]] = [
        {"testRunId": "r1", "appId": special, "operatingSystem": 1, SCHEDULED: "2024-07-01T08:30:00"},
        {"testRunId": "r2", "appId": "\\N", "operatingSystem": "two", SCHEDULED: "2024-01-01T08:30:00Z"},
        {"testRunId": "r3", "appId": None, "operatingSystem": 3, SCHEDULED: "yesterday", "jobs": [special]},
        {"testRunId": "r4", "appId": 7, "branch": {"a": "b\tc"}, SCHEDULED: "2024-01-01T08:30:00.5"},
    ]
    rows = [
        Row(r, api.parse_timestamp(r[SCHEDULED], tz) if r[SCHEDULED] != "yesterday" else None) for r in runs
    ]
    columns = Columns(None, api.RESOURCES["test_runs"].fields, api.FIELD_TYPES["test_runs"])
    with caplog.at_level(logging.WARNING):
        n = sql.load_table(hook, "odd_runs", rows, columns, windowed=True, window=Window(), scheduled_tz=tz)
    assert n == 4
    assert "2 value(s) did not fit" in caplog.text and "operatingSystem: 1" in caplog.text
    got = pg_query(
        uri,
        'SELECT "testRunId", "appId", "operatingSystem", scheduled, _scheduled_utc, jobs, branch, _record '
        'FROM odd_runs ORDER BY "testRunId"',
    )
    local = dt.datetime(2024, 7, 1, 8, 30, tzinfo=tz).astimezone(UTC)
    half = dt.datetime(2024, 1, 1, 8, 30, 0, 500000, tzinfo=tz).astimezone(UTC)
    assert [r[:5] for r in got] == [
        ("r1", special, 1, local, utc_text(local)),
        ("r2", "\\N", None, dt.datetime(2024, 1, 1, 8, 30, tzinfo=UTC), "2024-01-01T08:30:00.000000Z"),
        ("r3", None, 3, None, None),
        ("r4", "7", None, half, utc_text(half)),
    ]
    assert [r[5] for r in got] == [None, None, [special], None]
    assert got[3][6] == '{"a":"b\\tc"}'
    assert [json.loads(r[7]) for r in got] == runs


def test_to_json_is_the_standard_encoder_built_once() -> None:
    standard = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
    values = [*ODD_VALUES, {"nested": [ODD_VALUES, {"d": dt.date(2024, 1, 2)}]}, -float("inf"), 10**30]
    for value in values:
        assert sql.to_json(value) == standard.encode(value), value


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_utc_text_is_fixed_width_utc(zone: dt.tzinfo) -> None:
    for moment in (
        dt.datetime(2024, 1, 31, 6, 11, 38, tzinfo=zone),
        dt.datetime(2024, 7, 1, 23, 59, 59, 999999, tzinfo=zone),
        dt.datetime(1999, 12, 31, 23, 0, 0, 5, tzinfo=zone),
        dt.datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC),  # as strftime always wrote years below 1000
    ):
        assert utc_text(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert utc_text(dt.datetime(2024, 7, 1, 8, 30, tzinfo=ZoneInfo("Europe/Brussels"))) == (
        "2024-07-01T06:30:00.000000Z"
    )
