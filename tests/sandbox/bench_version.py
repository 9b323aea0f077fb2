"""Throughput of the sandbox: authorized ``GET /api/version`` from N concurrent keep-alive clients.

Not a test (pytest does not collect it). Run from the repository root::

    .venv/bin/python -m tests.sandbox.bench_version --clients 50 --seconds 10 [--processes 2]

It starts a sandbox in a subprocess, gets one token, then runs ``--clients`` threads (spread over
``--processes`` client processes), each with its own ``requests`` session, for ``--seconds``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time

import requests

from airflow_provider_quamotion.api import VERSION
from airflow_provider_quamotion.sandbox import Sandbox

from .conftest import fetch_token, tls_session


def _client_process(
    url: str, ca: str, token: str, clients: int, seconds: float, out: multiprocessing.Queue
) -> None:
    counts = [0] * clients
    errors = [0] * clients
    latencies: list[float] = []
    start_gate = threading.Barrier(clients)

    def worker(n: int) -> None:
        with requests.Session() as session:
            session.trust_env = False
            session.verify = ca
            session.headers["Authorization"] = f"Bearer {token}"
            start_gate.wait()
            deadline = time.perf_counter() + seconds
            while (now := time.perf_counter()) < deadline:
                try:
                    ok = session.get(url, timeout=30).status_code == 200
                except requests.RequestException:
                    ok = False
                if ok:
                    counts[n] += 1
                    if n == 0:
                        latencies.append(time.perf_counter() - now)
                else:
                    errors[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), sum(errors), latencies))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--processes", type=int, default=1, help="client processes the clients are spread over"
    )
    args = parser.parse_args()
    with Sandbox(runs=10) as sb, tls_session(sb) as session:
        token = fetch_token(sb, session)
        url = sb.api_url + VERSION
        queue: multiprocessing.Queue = multiprocessing.Queue()
        share = [
            args.clients // args.processes + (i < args.clients % args.processes)
            for i in range(args.processes)
        ]
        procs = [
            multiprocessing.Process(
                target=_client_process, args=(url, sb.ca_path, token, n, args.seconds, queue)
            )
            for n in share
        ]
        for p in procs:
            p.start()
        results = [queue.get() for _ in procs]
        for p in procs:
            p.join()
        ok = sum(r[0] for r in results)
        errors = sum(r[1] for r in results)
        latencies = [lat for r in results for lat in r[2]]
        print(
            f"{args.clients} clients in {args.processes} process(es), {args.seconds:.0f}s: "
            f"{ok / args.seconds:.0f} requests/s, {errors} errors, "
            f"latency p50 {statistics.median(latencies) * 1000:.1f} ms, "
            f"p95 {statistics.quantiles(latencies, n=20)[-1] * 1000:.1f} ms (one client's view)"
        )
        print(f"server counters: {sb.counters()['status']}")


if __name__ == "__main__":
    main()
