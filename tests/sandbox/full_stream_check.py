"""The whole million-run ``GET testRun`` stream, with the server's memory watched (not a default test).

Run from the repository root (about 20-30 s)::

    .venv/bin/python -m tests.sandbox.full_stream_check [--runs 1000000]

Exits non-zero when the record count, the records themselves (every 1000th is compared with
``Sandbox.expected_test_runs``) or the server's RSS growth (> 25 MiB) are wrong.
"""

from __future__ import annotations

import argparse
import sys
import time

import ijson
import psutil

from airflow_provider_quamotion import api as qapi
from airflow_provider_quamotion.sandbox import Sandbox

from .conftest import fetch_token, tls_session
from .test_scale import RSS_GROWTH_LIMIT


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1_000_000)
    args = parser.parse_args()
    with Sandbox(runs=args.runs, seed=5) as sb, tls_session(sb) as session:
        session.headers["Authorization"] = f"Bearer {fetch_token(sb, session)}"
        server = psutil.Process(sb.pid)
        before = peak = server.memory_info().rss
        start = time.perf_counter()
        count = mismatches = 0
        expected = sb.expected_test_runs()
        with session.get(sb.project_url + qapi.TEST_RUNS, stream=True, timeout=120) as response:
            response.raise_for_status()
            response.raw.decode_content = True
            for served in ijson.items(response.raw, "item", use_float=True):
                wanted = next(expected)
                if count % 1000 == 0:
                    mismatches += served != wanted
                if count % 50_000 == 0:
                    peak = max(peak, server.memory_info().rss)
                count += 1
        elapsed = time.perf_counter() - start
    growth = (peak - before) / 2**20
    print(
        f"{count} runs streamed in {elapsed:.1f}s ({count / elapsed:.0f} runs/s); "
        f"server RSS {before / 2**20:.0f} -> {peak / 2**20:.0f} MiB (+{growth:.1f}); {mismatches} mismatches"
    )
    ok = count == args.runs and mismatches == 0 and peak - before < RSS_GROWTH_LIMIT
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
