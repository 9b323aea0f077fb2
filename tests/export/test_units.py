"""Unit tests of the export pieces: window, columns, the ordered fan-out, writers, SQL helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionError
from airflow_provider_quamotion.export.columns import Columns, cell
from airflow_provider_quamotion.export.source import IN_FLIGHT_PER_WORKER, iter_rows, ordered_map
from airflow_provider_quamotion.export.sql import quote, quote_table
from airflow_provider_quamotion.export.window import Window, parse_instant, scheduled_of, utc_text
from airflow_provider_quamotion.export.writers import write_file

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02", dt.datetime(2024, 1, 2, tzinfo=UTC)),
        ("2024-01-02T03:04:05", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05+02:00", dt.datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)),
        (dt.datetime(2024, 1, 2, 3), dt.datetime(2024, 1, 2, 3, tzinfo=UTC)),
        (dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_parse_instant(value: Any, expected: dt.datetime | None) -> None:
    assert parse_instant(value) == expected


def test_window_bounds_and_text_order() -> None:
    w = Window.of("2024-01-02", "2024-01-03")
    assert w.contains(parse_instant("2024-01-02T00:00:00"))
    assert not w.contains(parse_instant("2024-01-03T00:00:00+00:00"))
    assert not w.contains(parse_instant("2024-01-01T23:59:59.999"))
    assert not w.contains(None) and Window().contains(None)
    assert w.iso() == ("2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00")
    times = [parse_instant(t) for t in ("2024-01-02T10:00:00.5Z", "2024-01-02T09:00:00-03:00", "2023-12-31")]
    texts = [utc_text(t) for t in times if t]
    assert sorted(texts) == [utc_text(t) for t in sorted(t for t in times if t)]
    assert scheduled_of({"scheduled": "garbage"}) is None
    with pytest.raises(QuamotionConfigError, match="before since"):
        Window.of("2024-01-03", "2024-01-02")


def test_cells_and_columns() -> None:
    assert [cell(v) for v in ("a", 1, 1.5, True, None, {"k": [1, "é"]})] == [
        "a",
        "1",
        "1.5",
        "true",
        None,
        '{"k":[1,"é"]}',
    ]
    cols = Columns(None)
    assert cols.fix({"b": 1, "a": 2}) == ("b", "a")
    assert cols.values({"a": 3, "c": 4}) == [None, 3]
    assert Columns(["x"]).project({"x": 1, "y": 2}) == {"x": 1}
    assert Columns(None).project({"x": 1, "y": 2}) == {"x": 1, "y": 2}
    with pytest.raises(QuamotionConfigError):
        Columns(["a", "a"])


def test_ordered_map_keeps_order_bounds_in_flight_and_is_lazy() -> None:
    consumed = 0
    outstanding = 0
    peak = 0
    lock = threading.Lock()

    def source() -> Iterator[int]:
        nonlocal consumed, outstanding
        for i in itertools.count():
            consumed += 1
            with lock:
                outstanding += 1
            yield i

    async def square(i: int) -> int:
        await asyncio.sleep(0)
        return i * i

    gen = ordered_map(square, source(), in_flight=8)
    out = []
    for item, result in gen:
        with lock:
            outstanding -= 1
        peak = max(peak, outstanding)
        out.append((item, result))
        if len(out) == 1000:
            break
    gen.close()
    assert out == [(i, i * i) for i in range(1000)]
    assert consumed <= 1000 + 8  # an endless input, consumed only as far as needed
    assert peak <= 8
    assert not [t for t in threading.enumerate() if t.name == "quamotion-export"]  # its loop stopped


def test_ordered_map_raises_from_the_failing_item() -> None:
    async def fail_on_3(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i

    seen: list[int] = []

    def consume() -> None:
        for item, _ in ordered_map(fail_on_3, range(100), in_flight=4):
            seen.append(item)

    with pytest.raises(ValueError, match="three"):
        consume()
    assert seen == [0, 1, 2]


def test_ordered_map_goes_on_past_a_slow_head() -> None:
    # Item 0 finishes only once 12 later items have: with a look-ahead of 4 it would wait for ever
    # (the timeout then fails it); with a look-ahead of 64 the others go on meanwhile.
    done = 0

    async def work(i: int) -> int:
        nonlocal done
        if i == 0:
            for _ in range(10_000):
                if done >= 12:
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError("the head blocked every other item")
        done += 1
        return i

    assert [i for i, _ in ordered_map(work, range(50), in_flight=64)] == list(range(50))


def test_ordered_map_cancels_what_runs_after_a_failure() -> None:
    calls: list[int] = []
    cancelled: list[int] = []
    finished: list[int] = []

    async def work(i: int) -> int:
        calls.append(i)
        if i == 0:
            await asyncio.sleep(0.05)  # the others start meanwhile and wait
            raise ValueError("zero")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        finished.append(i)
        return i

    closed: list[bool] = []

    async def close() -> None:
        closed.append(True)

    with pytest.raises(ValueError, match="zero"):
        for _ in ordered_map(work, range(1000), in_flight=100, close=close):
            pass
    assert len(calls) <= 100  # none beyond the look-ahead was started
    assert sorted(cancelled) == sorted(calls[1:]) and not finished  # the rest were cancelled, not awaited
    assert closed == [True]  # close() ran on the loop before it stopped
    assert not [t for t in threading.enumerate() if t.name == "quamotion-export"]


class EndlessHook:
    """A hook whose test-run list never ends: an export must stream it, never materialise it."""

    def __init__(self) -> None:
        self.runs_read = 0
        self.job_calls = 0

    def iter_records(self, endpoint: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        assert endpoint == api.TEST_RUNS
        for i in itertools.count():
            self.runs_read += 1
            yield {"testRunId": f"r{i}", "scheduled": "2024-01-02T00:00:00Z" if i % 2 else "2020-01-01"}

    def async_twin(self, pool_size: int) -> EndlessHook:
        return self

    async def list_jobs(self, run_id: str) -> list[dict[str, Any]]:
        self.job_calls += 1
        return [{"id": 1, "testRunId": "ignored"}, {"id": 2}]

    async def aclose(self) -> None:
        return None


def test_jobs_stream_from_an_endless_run_list() -> None:
    hook = EndlessHook()
    rows = iter_rows(hook, api.RESOURCES["jobs"], window=Window.of("2024-01-01"), max_concurrency=8)  # type: ignore[arg-type]
    first = list(itertools.islice(rows, 10_000))
    rows.close()
    assert [r.record["testRunId"] for r in first[:4]] == ["r1", "r1", "r3", "r3"]
    assert first[0].record == {"testRunId": "r1", "id": 1}
    assert first[0].scheduled == parse_instant("2024-01-02")
    window = IN_FLIGHT_PER_WORKER * 8  # runs in flight ahead of the one being written
    assert hook.job_calls <= 5000 + window
    assert hook.runs_read <= 2 * (5000 + window) + 2


def test_writers_empty_and_parquet_type_mismatch(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    assert write_file([], tmp_path / "e.jsonl", "jsonl") == 0
    assert (tmp_path / "e.jsonl").read_bytes() == b""
    assert write_file([], tmp_path / "e.csv", "csv", default_fields=("a", "b")) == 0
    assert (tmp_path / "e.csv").read_bytes() == b"a,b\r\n"
    assert write_file([], tmp_path / "e.parquet", "parquet", default_fields=("a",)) == 0
    assert pq.read_table(tmp_path / "e.parquet").column_names == ["a"]
    records = [{"n": 1}, {"n": 2.0}, {"n": "three"}]
    with pytest.raises(QuamotionError, match="'n'"):
        write_file(records, tmp_path / "bad.parquet", "parquet", batch_size=2)
    assert not any(tmp_path.glob("*bad*"))
    assert write_file(records, tmp_path / "ok.parquet", "parquet", batch_size=3) == 3
    assert pq.read_table(tmp_path / "ok.parquet").column("n").to_pylist() == ["1", "2.0", "three"]
    with pytest.raises(QuamotionConfigError, match="format"):
        write_file(records, tmp_path / "x", "xml")


def test_jsonl_is_deterministic_and_streams_unicode(tmp_path: Path) -> None:
    records = ({"i": i, "name": "é" * (i % 5), "nested": {"k": [i]}} for i in range(20_000))
    assert write_file(records, tmp_path / "a.jsonl", "jsonl") == 20_000
    records = ({"i": i, "name": "é" * (i % 5), "nested": {"k": [i]}} for i in range(20_000))
    write_file(records, tmp_path / "b.jsonl", "jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert json.loads((tmp_path / "a.jsonl").read_text(encoding="utf-8").splitlines()[3])["name"] == "ééé"


class FakeHook:
    escape_word_format = '"{}"'


class MySqlLike:
    escape_word_format = "`{}`"


def test_identifier_quoting() -> None:
    assert quote(FakeHook(), 'we"ird') == '"we""ird"'
    assert quote_table(FakeHook(), "raw.test_runs") == '"raw"."test_runs"'
    assert quote_table(MySqlLike(), "t") == "`t`"
    with pytest.raises(QuamotionConfigError):
        quote_table(FakeHook(), "raw.")


@pytest.mark.parametrize("key", ["_record", "_RECORD", "_Record", "_SCHEDULED_UTC", "_scheduled_utc"])
def test_a_record_key_that_is_a_reserved_sql_column_in_any_case_is_a_clear_error(key: str) -> None:
    from airflow_provider_quamotion.export.source import Row
    from airflow_provider_quamotion.export.sql import load_table

    rows = [Row({"testRunId": "r1", key: "x"}, None)]
    with pytest.raises(
        QuamotionConfigError, match=r"collide with the columns '_scheduled_utc' and '_record'"
    ):
        load_table(object(), "runs", rows, Columns(None), windowed=False, window=Window.of("2024-01-01"))
