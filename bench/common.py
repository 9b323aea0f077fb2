"""Helpers shared by the benchmark orchestrator and its worker subprocesses."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
#: Marks the line a worker prints its result on (the rest of its output is logs).
RESULT_MARK = "BENCH-RESULT "


def peak_rss_kb() -> int:
    """This process's peak resident set size, KiB (Linux ``ru_maxrss``)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def current_rss_kb() -> int:
    """This process's current resident set size, KiB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


def emit(result: dict[str, Any]) -> None:
    """Print a worker's result for the orchestrator."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def run_worker(
    name: str, args: Sequence[str] = (), *, env: dict[str, str] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run ``python -m bench.workers NAME ARGS`` in a fresh process and return its result."""
    cmd = [sys.executable, "-m", "bench.workers", name, *args]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            result.setdefault("_process_seconds", round(time.monotonic() - started, 2))
            return result
    raise RuntimeError(
        f"worker {name} {' '.join(args)} failed (exit {proc.returncode}):\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )


def worker_env(connection_json: str, airflow_home: Path) -> dict[str, str]:
    """The environment of a worker: the sandbox as ``quamotion_default``, a scratch AIRFLOW_HOME."""
    env = dict(os.environ)
    env["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = connection_json
    env["AIRFLOW_HOME"] = str(airflow_home)
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def median(values: Sequence[float]) -> float:
    """The median (of at least one value)."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return float(ordered[rank])


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as handle:
            info["memory_gb"] = round(int(handle.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["apache_airflow"] = version("apache-airflow")
        info["msal"] = version("msal")
        info["httpx"] = version("httpx")
        info["requests"] = version("requests")
    except Exception:  # noqa: S110 - informative only
        pass
    return info
