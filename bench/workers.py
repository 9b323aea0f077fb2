"""Benchmark workers: each runs in a fresh process (``python -m bench.workers NAME ...``) and prints one result.

The orchestrator (:mod:`bench.__main__`) starts the sandbox, sets faults, reads its counters and runs
these; a worker only measures itself (wall time around the measured part, its own ``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.common import current_rss_kb, emit, peak_rss_kb, percentile


def _operator_export(
    resource: str, destination: str, max_concurrency: int, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """The export operator's own code path: ``QuamotionExportOperator.execute``."""
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    operator = QuamotionExportOperator(
        task_id=f"bench_{resource}",
        resource=resource,
        destination=destination,
        format="jsonl",
        max_concurrency=max_concurrency,
        since=since,
        until=until,
    )
    summary: dict[str, Any] = operator.execute(context={})
    return summary


def _warm_up() -> None:
    """Token, project root and the async client's first-use costs (importing ``aiohttp``, which builds
    its default SSL contexts, and our SSL context), each paid once per process, so timings cover the
    export alone."""
    import aiohttp  # noqa: F401 - what the jobs fan-out imports on first use

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
    from airflow_provider_quamotion.transport.aio import ssl_context

    hook = QuamotionHook()
    hook.url_for("testRun")
    ssl_context(hook.settings.verify)
    hook.close()


def cmd_tokens(args: argparse.Namespace) -> None:
    """``calls`` API calls, each through a fresh QuamotionHook (and its own session), in one process."""
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    started = time.perf_counter()
    for _ in range(args.calls):
        hook = QuamotionHook()
        hook.get_version()
        hook.close()
    emit({"calls": args.calls, "seconds": time.perf_counter() - started})


def cmd_export(args: argparse.Namespace) -> None:
    """One export through the operator; reports rows, seconds and this process's peak RSS."""
    import airflow_provider_quamotion.export.runner
    import airflow_provider_quamotion.hooks.quamotion  # noqa: F401

    if args.warm:
        _warm_up()
    baseline = peak_rss_kb()
    started = time.perf_counter()
    summary = _operator_export(args.resource, args.dest, args.max_concurrency)
    seconds = time.perf_counter() - started
    emit(
        {
            "rows": summary["rows"],
            "seconds": seconds,
            "baseline_peak_rss_kb": baseline,
            "peak_rss_kb": peak_rss_kb(),
        }
    )


def cmd_sql(args: argparse.Namespace) -> None:
    """The SQL export through the operator (fetch and load streamed, one transaction); rows, seconds."""
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    _warm_up()
    started = time.perf_counter()
    summary = QuamotionExportOperator(
        task_id="bench_sql", resource="test_runs", sql_conn_id=args.sql_conn_id, table=args.table
    ).execute(context={})
    emit({"rows": summary["rows"], "seconds": time.perf_counter() - started, "peak_rss_kb": peak_rss_kb()})


def _fetch_all(url: str) -> list[dict[str, Any]]:
    """The baselines' fetch: one ``requests`` GET of the whole list, then ``.json()``."""
    import requests

    session = requests.Session()
    session.trust_env = False
    headers = {"Authorization": f"Bearer {os.environ['BENCH_TOKEN']}"}
    records: list[dict[str, Any]] = session.get(
        url, headers=headers, verify=os.environ["BENCH_CA"], timeout=600
    ).json()
    return records


def cmd_copy_baseline(args: argparse.Namespace) -> None:
    """Fetch the JSON, then ``COPY FROM STDIN`` (psycopg2) into a table of the same columns, as text."""
    import io

    import psycopg2

    from airflow_provider_quamotion import api
    from airflow_provider_quamotion.export.columns import cell, to_json

    fields = api.RESOURCES["test_runs"].fields
    started = time.perf_counter()
    records = _fetch_all(args.url)
    buffer = io.StringIO()
    for record in records:
        values = [cell(record.get(f)) for f in fields] + [to_json(record)]
        escaped = (
            "\\N" if v is None else v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            for v in values
        )
        buffer.write("\t".join(escaped) + "\n")
    buffer.seek(0)
    with psycopg2.connect(args.uri) as conn, conn.cursor() as cur:
        columns = ", ".join(f'"{c}"' for c in (*fields, "_record"))
        cur.execute(f"DROP TABLE IF EXISTS {args.table}")
        cur.execute(f"CREATE TABLE {args.table} ({', '.join(f'{c} TEXT' for c in columns.split(', '))})")
        cur.copy_expert(f"COPY {args.table} ({columns}) FROM STDIN", buffer)
    emit({"rows": len(records), "seconds": time.perf_counter() - started, "peak_rss_kb": peak_rss_kb()})


def cmd_pandas_baseline(args: argparse.Namespace) -> None:
    """Fetch the JSON with ``requests``, then ``pandas.DataFrame.to_sql(method="multi")`` (SQLAlchemy)."""
    import pandas as pd
    import sqlalchemy

    from airflow_provider_quamotion.export.columns import to_json

    started = time.perf_counter()
    records = _fetch_all(args.url)
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:  # nested values (jobs, ...) as JSON text: to_sql cannot bind lists
        if frame[column].map(lambda v: isinstance(v, dict | list)).any():
            frame[column] = frame[column].map(lambda v: None if v is None else to_json(v))
    engine = sqlalchemy.create_engine(args.uri.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        frame.to_sql(args.table, conn, if_exists="replace", index=False, method="multi", chunksize=1000)
    engine.dispose()
    emit({"rows": len(records), "seconds": time.perf_counter() - started, "peak_rss_kb": peak_rss_kb()})


def cmd_naive(args: argparse.Namespace) -> None:
    """The naive way: ``requests.get(url).json()`` then a write loop, on the same data."""
    import requests

    url, token, ca = args.url, os.environ["BENCH_TOKEN"], os.environ["BENCH_CA"]
    session = requests.Session()
    session.trust_env = False
    baseline = peak_rss_kb()
    started = time.perf_counter()
    records = session.get(url, headers={"Authorization": f"Bearer {token}"}, verify=ca, timeout=600).json()
    with open(args.dest, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    seconds = time.perf_counter() - started
    emit(
        {
            "rows": len(records),
            "seconds": seconds,
            "baseline_peak_rss_kb": baseline,
            "peak_rss_kb": peak_rss_kb(),
        }
    )


def cmd_triggers(args: argparse.Namespace) -> None:
    """Many QuamotionTestRunTrigger.run() in one event loop, with a ticker measuring loop lag."""
    import airflow_provider_quamotion.hooks.quamotion  # noqa: F401 - what a triggerer has loaded
    from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger

    ids = json.loads(Path(args.ids).read_text())
    tick = 0.01
    if args.tune_gc:
        from airflow_provider_quamotion.tuning import tune_triggerer_gc

        tune_triggerer_gc()
    gc_seconds = [0.0, 0.0]  # all collections, full collections
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
            return
        spent = time.perf_counter() - gc_started[0]
        gc_seconds[0] += spent
        if info["generation"] == 2:
            gc_seconds[1] += spent

    gc.callbacks.append(on_gc)

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        rss_samples: list[int] = []
        done = asyncio.Event()

        async def ticker() -> None:
            n = 0
            while not done.is_set():
                start = loop.time()
                await asyncio.sleep(tick)
                lags.append(max(0.0, loop.time() - start - tick))
                n += 1
                if n % 10 == 0:
                    rss_samples.append(current_rss_kb())

        active: list[float] = []

        async def one(test_run_id: str) -> str:
            trigger = QuamotionTestRunTrigger(
                test_run_id, poll_interval=args.poll, deadline=time.time() + args.deadline
            )
            begun = time.perf_counter()
            try:
                async for event in trigger.run():
                    return str(event.payload["status"])
                return "no event"
            finally:
                active.append(time.perf_counter() - begun)

        before = current_rss_kb()
        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.2)
        started, cpu_started, gc_before = time.perf_counter(), time.process_time(), list(gc_seconds)
        statuses = await asyncio.gather(*(one(i) for i in ids), return_exceptions=True)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        done.set()
        await ticking
        counted: dict[str, int] = {}
        for status in statuses:
            key = status if isinstance(status, str) else f"exception {type(status).__name__}"
            counted[key] = counted.get(key, 0) + 1
        peak = max([*rss_samples, current_rss_kb()])
        return {
            "triggers": len(ids),
            "statuses": counted,
            "seconds": seconds,
            "lag_p50_ms": percentile(lags, 0.50) * 1000,
            "lag_p99_ms": percentile(lags, 0.99) * 1000,
            "lag_max_ms": max(lags) * 1000 if lags else 0.0,
            "ticks": len(lags),
            "rss_before_kb": before,
            "rss_peak_kb": peak,
            "peak_rss_per_trigger_kb": (peak - before) / max(1, len(ids)),
            "active_seconds_mean": sum(active) / max(1, len(active)),
            "cpu_seconds": cpu_seconds,
            "gc_seconds": gc_seconds[0] - gc_before[0],
            "gc_full_seconds": gc_seconds[1] - gc_before[1],
            "gc_thresholds": list(gc.get_threshold()),
        }

    emit(asyncio.run(main()))


def cmd_imports(args: argparse.Namespace) -> None:
    """Import time of the provider's modules on top of an already imported ``airflow.sdk``."""
    import importlib
    import sys

    import airflow.sdk

    # What any DAG file with operators and sensors loads anyway.
    _ = (airflow.sdk.DAG, airflow.sdk.BaseOperator, airflow.sdk.BaseSensorOperator)
    before = set(sys.modules)
    started = time.perf_counter()
    for module in args.modules.split(","):
        importlib.import_module(module)
    ms = (time.perf_counter() - started) * 1000
    new = sorted(set(sys.modules) - before)
    heavy = [m for m in ("requests", "aiohttp", "httpx", "msal", "ijson", "pyarrow") if m in sys.modules]
    emit({"ms": ms, "new_modules": len(new), "heavy_loaded": heavy})


def cmd_rps(args: argparse.Namespace) -> None:
    """Authorized GETs of ``--url`` from ``clients`` concurrent keep-alive clients for ``seconds``.

    The clients are ``aiohttp`` (the provider's async client library): ``httpx`` tops out near
    1,000 requests/s per process, below what the sandbox serves, so it would measure itself.
    """
    import ssl

    import aiohttp

    url, token = args.url, os.environ["BENCH_TOKEN"]
    context = ssl.create_default_context(cafile=os.environ["BENCH_CA"])
    headers = {"Authorization": f"Bearer {token}"}

    async def main() -> dict[str, Any]:
        counts = {"ok": 0, "error": 0}
        latencies: list[float] = []
        clients = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context, limit=1))
            for _ in range(args.clients)
        ]

        async def get(client: aiohttp.ClientSession) -> int:
            async with client.get(url, headers=headers) as response:
                await response.read()
                return response.status

        try:
            await asyncio.gather(*(get(c) for c in clients))  # connect + TLS first
            stop_at = time.perf_counter() + args.seconds

            async def client_loop(client: aiohttp.ClientSession) -> None:
                while time.perf_counter() < stop_at:
                    start = time.perf_counter()
                    try:
                        counts["ok" if await get(client) == 200 else "error"] += 1
                    except aiohttp.ClientError:
                        counts["error"] += 1
                    latencies.append(time.perf_counter() - start)

            started = time.perf_counter()
            await asyncio.gather(*(client_loop(c) for c in clients))
            seconds = time.perf_counter() - started
        finally:
            await asyncio.gather(*(c.close() for c in clients))
        return {
            "requests": counts["ok"],
            "errors": counts["error"],
            "seconds": seconds,
            "rps": counts["ok"] / seconds,
            "latency_p50_ms": percentile(latencies, 0.5) * 1000,
            "latency_p99_ms": percentile(latencies, 0.99) * 1000,
        }

    emit(asyncio.run(main()))


def cmd_chaos(args: argparse.Namespace) -> None:
    """Windowed exports under faults, as a daily DAG would run them (``--parallel`` windows at a time).

    Each window's export of each resource is one task: a failed one is re-run from scratch, up to
    ``--attempts`` times, like an Airflow task with retries (the atomic write leaves nothing behind).
    """
    from concurrent.futures import ThreadPoolExecutor

    import airflow_provider_quamotion.export.runner  # noqa: F401 - loaded before the threads start

    windows = json.loads(args.windows)

    def task(job: tuple[int, str]) -> dict[str, Any]:
        k, resource = job
        since, until = windows[k]
        dest = str(Path(args.dir) / f"{resource}-{k:03d}.jsonl")
        errors: list[str] = []
        rows = None
        started = time.perf_counter()
        for _attempt in range(args.attempts):
            try:
                rows = _operator_export(resource, dest, args.max_concurrency, since=since, until=until)[
                    "rows"
                ]
                break
            except Exception as err:
                errors.append(f"{type(err).__name__}: {str(err)[:300]}")
        return {
            "window": k,
            "resource": resource,
            "rows": rows,
            "attempts": len(errors) + (rows is not None),
            "errors": errors,
            "seconds": round(time.perf_counter() - started, 2),
        }

    jobs = [(k, r) for k in range(len(windows)) for r in args.resources.split(",")]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        tasks = list(pool.map(task, jobs))
    emit({"tasks": tasks, "seconds": time.perf_counter() - started})


def main() -> None:
    """Parse the worker's command line and run it."""
    parser = argparse.ArgumentParser(prog="python -m bench.workers")
    sub = parser.add_subparsers(dest="name", required=True)
    p = sub.add_parser("tokens")
    p.add_argument("--calls", type=int, default=1000)
    p.set_defaults(fn=cmd_tokens)
    p = sub.add_parser("export")
    p.add_argument("--resource", default="test_runs")
    p.add_argument("--dest", required=True)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--warm", action="store_true")
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("sql")
    p.add_argument("--sql-conn-id", required=True)
    p.add_argument("--table", required=True)
    p.set_defaults(fn=cmd_sql)
    for name, fn in (("copy_baseline", cmd_copy_baseline), ("pandas_baseline", cmd_pandas_baseline)):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True)
        p.add_argument("--uri", required=True)
        p.add_argument("--table", required=True)
        p.set_defaults(fn=fn)
    p = sub.add_parser("naive")
    p.add_argument("--url", required=True)
    p.add_argument("--dest", required=True)
    p.set_defaults(fn=cmd_naive)
    p = sub.add_parser("triggers")
    p.add_argument("--ids", required=True)
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--deadline", type=float, default=120.0)
    p.add_argument(
        "--tune-gc", action="store_true", help="tune_triggerer_gc() first (the Sizing page's advice)"
    )
    p.set_defaults(fn=cmd_triggers)
    p = sub.add_parser("imports")
    p.add_argument("--modules", required=True)
    p.set_defaults(fn=cmd_imports)
    p = sub.add_parser("rps")
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(fn=cmd_rps)
    p = sub.add_parser("chaos")
    p.add_argument("--dir", required=True)
    p.add_argument("--resources", default="test_runs,jobs")
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--attempts", type=int, default=3)
    p.add_argument("--windows", required=True, help="JSON list of [since, until] pairs")
    p.add_argument("--parallel", type=int, default=4)
    p.set_defaults(fn=cmd_chaos)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
