"""The garbage collector under many concurrent requests: the jobs fan-out's, and a busy triggerer's.

Python's collector is tuned for programs that allocate little: it scans the youngest objects every
700 net allocations, and the whole process when enough objects have survived. Thousands of
requests in flight allocate about a million objects a second (each request, its reply, its
coroutines and futures), and the objects of a request still in flight survive the young
collections, so they are promoted and set off full collections of the whole process (an Airflow
process holds a million objects or more). Measured (``make bench``): with 10,000 triggers polling
every 2 s, full collections took ~40 % of the triggerer's CPU, ~0.4 s each, and made its loop lag;
in a 32-way jobs export, 15-25 % of the export's CPU. With :data:`GC_THRESHOLDS` the collector
takes 1-3 %.

* The jobs fan-out relaxes the thresholds itself while it runs (:func:`relaxed_gc`): an export runs in
  a task process of its own, for a bounded time, and the previous thresholds come back when the
  last fan-out of the process ends.
* A triggerer is a long-lived process shared with other providers' triggers, so the provider never
  changes it on its own: a deployment opts in with :func:`tune_triggerer_gc` (from
  ``airflow_local_settings.py``, see the Sizing page).

Only the thresholds change, never ``gc.disable()``: reference cycles are still collected, and most
garbage is freed by reference counting the moment it is dropped, as before.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

#: ``gc.set_threshold`` arguments under many requests in flight: the youngest generation is collected
#: every 50,000 net allocations instead of 700, the older two a little less often than by default.
GC_THRESHOLDS = (50_000, 20, 10)

_LOCK = threading.Lock()
_relaxed = 0  # fan-outs running in this process
_saved: tuple[int, int, int] | None = None  # the thresholds before the first of them
_set: tuple[int, int, int] | None = None  # what it set


def _raised() -> tuple[int, int, int]:
    low, middle, old = (max(c, t) for c, t in zip(gc.get_threshold(), GC_THRESHOLDS, strict=True))
    return low, middle, old


def tune_triggerer_gc() -> tuple[int, int, int]:
    """Raise the garbage collector's thresholds to :data:`GC_THRESHOLDS` for good; returns them.

    A threshold already higher (set by the deployment) is kept, and a collector switched off
    (``gc.disable()``) stays off. Call it once per process, e.g. from ``airflow_local_settings.py``.
    """
    current, chosen = gc.get_threshold(), _raised()
    if chosen != current:
        gc.set_threshold(*chosen)
        log.info("Garbage collector thresholds %s -> %s (triggerer tuning).", current, chosen)
    return chosen


@contextlib.contextmanager
def relaxed_gc() -> Iterator[None]:
    """Raise the thresholds to :data:`GC_THRESHOLDS` while the block runs (re-entrant, thread-safe).

    The first block of the process to enter raises them, the last to leave puts back what was there
    before, unless something else changed them meanwhile (then theirs stay).
    """
    global _relaxed, _saved, _set
    with _LOCK:
        if _relaxed == 0:
            _saved, _set = gc.get_threshold(), _raised()
            gc.set_threshold(*_set)
        _relaxed += 1
    try:
        yield
    finally:
        with _LOCK:
            _relaxed -= 1
            if _relaxed == 0:
                if _saved is not None and gc.get_threshold() == _set:
                    gc.set_threshold(*_saved)
                _saved = _set = None


__all__ = ["GC_THRESHOLDS", "relaxed_gc", "tune_triggerer_gc"]
