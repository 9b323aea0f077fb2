"""Measure exports against the sandbox (not a test; figures for docs/operators.md and the benchmark issue).

    .venv/bin/python -m tests.export.measure_export rss      # peak RSS exporting 10k / 100k / 1M test runs
    .venv/bin/python -m tests.export.measure_export fanout   # jobs of 400 runs, 20 ms latency, 1- vs 8-way
    .venv/bin/python -m tests.export.measure_export faults   # jobs of 1,000 runs, 8-way, clean vs 20% faults
        (QM_SAMPLES=n: faulted samples; QM_IN_FLIGHT_PER_WORKER=n: another look-ahead, for comparison)

Each export runs in a child process (the sandbox server is another), so ``ru_maxrss`` is the export's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from airflow_provider_quamotion.sandbox import Sandbox

CHILD = r"""
import os, resource, sys, time
if os.environ.get("QM_IN_FLIGHT_PER_WORKER"):  # measurement only: another look-ahead
    from airflow_provider_quamotion.export import source
    source.IN_FLIGHT_PER_WORKER = int(os.environ["QM_IN_FLIGHT_PER_WORKER"])
from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
res, fmt, conc, dest = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
window = dict(zip(("since", "until"), sys.argv[5:7]))
t = time.perf_counter()
s = QuamotionExportOperator(
    task_id="m", resource=res, destination=dest, format=fmt, max_concurrency=conc, **window
).execute({})
print(s["rows"], round(time.perf_counter() - t, 2), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def child(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, check=False
    )
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else out.stderr[-2000:]


def main(mode: str) -> None:
    if mode == "rss":
        for runs in (10_000, 100_000, 1_000_000):
            with Sandbox(runs=runs, seed=0) as sb:
                env = {**os.environ, "AIRFLOW_CONN_QUAMOTION_DEFAULT": sb.connection_json}
                for fmt in ("jsonl", "csv", "parquet"):
                    dest = os.path.join(tempfile.mkdtemp(), f"runs.{fmt}")
                    print(
                        runs,
                        fmt,
                        "rows seconds peak_rss_mb:",
                        child(env, "test_runs", fmt, "8", dest),
                        flush=True,
                    )
        return
    if mode == "faults":
        # the benchmark's chaos mix: 20% of API requests fail (429, 503 with Retry-After: 0, dropped connections)
        chaos = {
            "rules": [
                {
                    "path": r"^/(api|project)/",
                    "status": [429, 429, 503, 503, "drop"],
                    "rate": 0.2,
                    "retry_after": 0,
                }
            ]
        }
        with Sandbox(runs=1000, seed=0) as sb:
            env = {**os.environ, "AIRFLOW_CONN_QUAMOTION_DEFAULT": sb.connection_json}
            samples = int(os.environ.get("QM_SAMPLES", "3"))
            for label, config in (("clean", None), *[("20% faults", chaos)] * samples):
                if config is None:
                    sb.clear_faults()
                else:
                    sb.set_faults(config)
                dest = os.path.join(tempfile.mkdtemp(), "jobs.jsonl")
                result = child(env, "jobs", "jsonl", "8", dest)
                print(
                    f"jobs of 1,000 runs, max_concurrency=8, {label}: rows seconds peak_rss_mb:",
                    result,
                    flush=True,
                )
        return
    faults = {"rules": [{"path": "/jobs$", "latency_ms": 20}]}
    with Sandbox(runs=2000, seed=0, faults=faults) as sb:
        env = {**os.environ, "AIRFLOW_CONN_QUAMOTION_DEFAULT": sb.connection_json}
        since, until = sb.data.run(0)["scheduled"], sb.data.run(400)["scheduled"]
        for conc in (1, 8):
            dest = os.path.join(tempfile.mkdtemp(), "jobs.jsonl")
            result = child(env, "jobs", "jsonl", str(conc), dest, since, until)
            print(
                f"jobs of 400 runs, 20 ms latency, max_concurrency={conc}: rows seconds peak_rss_mb:", result
            )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fanout")
