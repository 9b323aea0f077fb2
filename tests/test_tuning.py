"""The garbage collector's thresholds: relaxed while a fan-out runs, tuned for good on a triggerer's opt-in."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator

import pytest

from airflow_provider_quamotion.tuning import GC_THRESHOLDS, relaxed_gc, tune_triggerer_gc


@pytest.fixture(autouse=True)
def _thresholds_restored() -> Iterator[None]:
    saved = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def test_the_defaults_are_raised_once_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    gc.set_threshold(700, 10, 10)
    with caplog.at_level(logging.INFO, logger="airflow_provider_quamotion.tuning"):
        assert tune_triggerer_gc() == GC_THRESHOLDS
        assert tune_triggerer_gc() == GC_THRESHOLDS  # a second call changes nothing
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700
    assert [r.getMessage() for r in caplog.records] == [
        f"Garbage collector thresholds (700, 10, 10) -> {GC_THRESHOLDS} (triggerer tuning)."
    ]


def test_a_higher_threshold_of_the_deployment_is_kept() -> None:
    gc.set_threshold(200_000, 5, 50)
    assert tune_triggerer_gc() == (200_000, GC_THRESHOLDS[1], 50)
    assert gc.get_threshold() == (200_000, GC_THRESHOLDS[1], 50)


def test_a_disabled_collector_stays_disabled() -> None:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        tune_triggerer_gc()
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()


def test_a_fan_out_relaxes_the_thresholds_while_it_runs_and_puts_them_back() -> None:
    gc.set_threshold(700, 10, 10)
    with relaxed_gc():
        assert gc.get_threshold() == GC_THRESHOLDS
        with relaxed_gc():  # a second fan-out of the process (another thread) overlapping the first
            assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_threshold() == GC_THRESHOLDS  # the first still runs
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_fan_outs_on_threads_leave_the_process_as_they_found_it() -> None:
    gc.set_threshold(1000, 10, 10)
    inside = threading.Barrier(2)
    seen: list[tuple[int, int, int]] = []

    def fan_out() -> None:
        with relaxed_gc():
            inside.wait(5)
            seen.append(gc.get_threshold())
            inside.wait(5)

    threads = [threading.Thread(target=fan_out) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [GC_THRESHOLDS, GC_THRESHOLDS]
    assert gc.get_threshold() == (1000, 10, 10)


def test_thresholds_changed_during_a_fan_out_are_left_as_they_were_set() -> None:
    gc.set_threshold(700, 10, 10)
    with relaxed_gc():
        gc.set_threshold(123_456, 10, 10)  # the deployment's own choice, meanwhile
    assert gc.get_threshold() == (123_456, 10, 10)


def test_the_jobs_fan_out_runs_relaxed_and_restores_the_thresholds() -> None:
    from airflow_provider_quamotion.export.source import ordered_map

    gc.set_threshold(700, 10, 10)
    during: list[tuple[int, int, int]] = []

    async def double(item: int) -> int:
        during.append(gc.get_threshold())
        return item * 2

    assert list(ordered_map(double, range(5), in_flight=2)) == [(i, i * 2) for i in range(5)]
    assert set(during) == {GC_THRESHOLDS}
    assert gc.get_threshold() == (700, 10, 10)
    stopped = ordered_map(double, range(5), in_flight=2)
    next(stopped)
    stopped.close()  # an export that fails or stops early puts them back too
    assert gc.get_threshold() == (700, 10, 10)
