"""``python -m bench`` (``make bench``): every benchmark against the sandbox, side by side, in one run.

Prints a table and writes ``bench/results/latest.json`` (numeric keys, plus details and the machine)
and ``bench/results/latest.md`` (the table, how to reproduce it, the machine) for the docs.

``--quick`` scales every workload down (a smoke run for development; its figures are not the
reference ones). ``--only a,b`` runs some benchmarks (tokens, triggers, export_memory, throughput,
fanout, imports, chaos, rps, triggers_10k, s3, warehouse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine_info, median, run_worker, worker_env
from bench.report import GOALS, render_markdown, render_table

ALL = (
    "tokens",
    "triggers",
    "fanout",
    "rps",
    "triggers_10k",
    "imports",
    "export_memory",
    "throughput",
    "chaos",
    "s3",
    "warehouse",
)


class Bench:
    """Holds the scratch directory, the sizes and the results of one run."""

    def __init__(self, scratch: Path, quick: bool) -> None:
        self.scratch = scratch
        self.quick = quick
        self.results: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        self.airflow_home = scratch / "airflow-home"
        self.airflow_home.mkdir()

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    @contextlib.contextmanager
    def sandbox(self, name: str, **kwargs: Any) -> Iterator[Any]:
        from airflow_provider_quamotion.sandbox import Sandbox

        started = time.monotonic()
        with Sandbox(self.scratch / f"sandbox-{name}", **kwargs) as sb:
            print(f"  sandbox {name} (runs={kwargs.get('runs')}) up in {time.monotonic() - started:.1f} s")
            yield sb

    def env(self, sb: Any, **extra: str) -> dict[str, str]:
        env = worker_env(sb.connection_json, self.airflow_home)
        env.update(extra)
        return env


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            yield json.loads(line)


def compare(got: Iterable[Any], expected: Iterable[Any]) -> tuple[int, int, int]:
    """``(lost, duplicated, expected_count)`` of two record streams, compared as multisets."""

    def canon(record: Any) -> str:
        return json.dumps(record, sort_keys=True, separators=(",", ":"))

    want = Counter(canon(r) for r in expected)
    have = Counter(canon(r) for r in got)
    lost = sum((want - have).values())
    extra = sum((have - want).values())
    return lost, extra, sum(want.values())


# --- the benchmarks ---------------------------------------------------------------------------------


def bench_tokens(b: Bench, sb: Any) -> None:
    calls = b.size(1000, 200)
    sb.clear_faults()
    sb.reset_counters()
    result = run_worker("tokens", ["--calls", str(calls)], env=b.env(sb))
    counters = sb.counters()
    tokens = counters["tokens_issued"] + counters["logins"]
    b.results["token_requests_per_1000_calls"] = tokens  # for `calls` calls (1,000 in a full run)
    b.details["tokens"] = {**result, "tokens_issued": tokens, "requests": counters["requests"]}


def _create_runs(sb: Any, n: int) -> list[str]:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    hook = QuamotionHook()
    app = next(a for a in hook.list_applications() if a["operatingSystem"] == "Android")
    package = hook.list_test_packages()[0]
    group = next(g for g in hook.list_device_groups() if g["name"] == "physical-android-8")

    def start(_: int) -> str:
        return str(hook.start_test_run(app, package, group["deviceGroupId"])["testRunId"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(start, range(n)))
    hook.close()
    return ids


def bench_triggers(b: Bench, sb: Any) -> None:
    n = b.size(1000, 100)
    sb.clear_faults()
    os.environ["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = sb.connection_json
    started = time.monotonic()
    ids = _create_runs(sb, n)
    created = time.monotonic() - started
    ids_file = b.scratch / "trigger-ids.json"
    ids_file.write_text(json.dumps(ids))
    sb.reset_counters()
    result = run_worker(
        "triggers", ["--ids", str(ids_file), "--poll", "2", "--deadline", "120"], env=b.env(sb)
    )
    counters = sb.counters()
    b.results["trigger_token_requests"] = counters["tokens_issued"] + counters["logins"]
    b.results["trigger_loop_lag_p99_ms"] = round(result["lag_p99_ms"], 1)
    b.results["peak_rss_per_trigger_kb"] = round(result["peak_rss_per_trigger_kb"], 1)
    b.details["triggers"] = {
        **result,
        "runs_created_seconds": round(created, 1),
        "requests": counters["requests"],
        "status": counters["status"],
        "project_lookups": counters["by_path"].get("/api/project", 0),
    }


def bench_triggers_10k(b: Bench) -> None:
    """10,000 test-run triggers in one event loop, polling every 2 s, their runs finishing in ~60 s:
    once with Python's default garbage collector, once tuned as the Sizing page advises
    (:func:`~airflow_provider_quamotion.triggers.tuning.tune_triggerer_gc`), each on runs of its own.

    The sandbox's own ceiling for the same poll (``GET .../testRun/{id}/jobs``, 50 clients) is
    measured on the same sandbox first: the ideal poll rate is ``triggers / poll interval``, capped
    by what the sandbox serves, so the figure measures the provider, not the emulator.
    """
    n, poll = b.size(10_000, 1_000), 2.0
    # runs queue 20 s then run 40 s: ~60 s from their start to their end
    with b.sandbox("triggers-10k", runs=b.size(300, 300), seed=0, queue_seconds=20.0, run_seconds=40.0) as sb:
        sb.clear_faults()
        os.environ["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = sb.connection_json
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

        hook = QuamotionHook()
        some_run = hook.list_test_runs()[0]["testRunId"]
        jobs_url, token = hook.url_for(f"testRun/{some_run}/jobs"), hook.get_token()
        hook.close()
        ceiling = sandbox_rps(jobs_url, b.env(sb, BENCH_TOKEN=token, BENCH_CA=sb.ca_path), "3")
        ideal = min(n / poll, ceiling["rps"])
        for prefix, tune in (("trigger_10k", False), ("trigger_10k_gc_tuned", True)):
            started = time.monotonic()
            ids = _create_runs(sb, n)
            created = time.monotonic() - started
            ids_file = b.scratch / f"{prefix}-ids.json"
            ids_file.write_text(json.dumps(ids))
            sb.reset_counters()
            result = run_worker(
                "triggers",
                ["--ids", str(ids_file), "--poll", str(poll), "--deadline", "240"]
                + (["--tune-gc"] if tune else []),
                env=b.env(sb),
                timeout=900,
            )
            counters = sb.counters()
            polls = sum(v for k, v in counters["by_path"].items() if k.endswith("/jobs"))
            achieved = polls / result["active_seconds_mean"]
            b.results[f"{prefix}_timeouts"] = sum(v for k, v in result["statuses"].items() if k != "success")
            b.results[f"{prefix}_loop_lag_p99_ms"] = round(result["lag_p99_ms"], 1)
            b.results[f"{prefix}_loop_lag_max_ms"] = round(result["lag_max_ms"], 1)
            b.results[f"{prefix}_token_requests"] = counters["tokens_issued"] + counters["logins"]
            b.results[f"{prefix}_requests_per_s_over_ideal"] = round(achieved / ideal, 2)
            b.details[prefix] = {
                **result,
                "poll_seconds": poll,
                "runs_created_seconds": round(created, 1),
                "requests": counters["requests"],
                "polls": polls,
                "status": counters["status"],
                "polls_per_s": round(achieved, 1),
                "ideal_polls_per_s": round(ideal, 1),
                "cpu_us_per_poll": round(result["cpu_seconds"] / max(1, polls) * 1e6),
                "gc_share_of_cpu": round(result["gc_seconds"] / max(1e-9, result["cpu_seconds"]), 3),
                "sandbox_jobs_requests_per_s_50_clients": round(ceiling["rps"], 1),
                "project_lookups": counters["by_path"].get("/api/project", 0),
            }


def bench_fanout(b: Bench, sb: Any) -> None:
    latency_ms = 20
    slow = {"path": r"/jobs$", "latency_ms": latency_ms}
    env = b.env(sb)
    walls: dict[str, list[float]] = {"1": [], "8": [], "32": [], "8-faulty": []}
    jobs_requests: list[int] = []
    failures = 0
    rows = None

    def export(concurrency: int, label: str) -> None:
        nonlocal rows, failures
        sb.reset_counters()
        dest = b.scratch / f"fanout-{label}.jsonl"
        try:
            result = run_worker(
                "export",
                ["--resource", "jobs", "--dest", str(dest), "--max-concurrency", str(concurrency), "--warm"],
                env=env,
            )
        except RuntimeError as err:  # the export failed outright (retries exhausted)
            failures += 1
            print(f"  fanout {label}: export failed: {str(err).splitlines()[-1][:200]}")
            return
        finally:
            dest.unlink(missing_ok=True)
        if label in ("1", "8"):
            by_path = sb.counters()["by_path"]
            jobs_requests.append(sum(v for k, v in by_path.items() if k.endswith("/jobs")))
        walls[label].append(result["seconds"])
        rows = result["rows"]

    sb.set_faults({"rules": [slow]})
    for concurrency in [8, 1, 8, 32, 8, 32] if not b.quick else [8, 1, 32]:
        export(concurrency, str(concurrency))
    # 20% of job-list requests fail (429, 503 or a dropped connection) and say Retry-After: 0
    sb.set_faults(
        {"rules": [slow, {"path": r"/jobs$", "status": [429, 503, "drop"], "rate": 0.2, "retry_after": 0}]}
    )
    for _ in range(b.size(10, 2)):
        export(8, "8-faulty")
    sb.clear_faults()
    seq, par = median(walls["1"]), median(walls["8"])
    requests = max(jobs_requests)
    floor = requests * latency_ms / 1000 / 8
    b.results["jobs_fanout_speedup_vs_sequential"] = round(seq / par, 2)
    b.results["jobs_fanout_ratio_to_floor"] = round(par / floor, 2)
    b.results["jobs_fanout_32_ratio_to_floor"] = round(median(walls["32"]) / (floor * 8 / 32), 2)
    b.results["jobs_fanout_faulty_over_clean"] = (
        round(median(walls["8-faulty"]) / par, 2) if walls["8-faulty"] else None
    )
    b.results["jobs_fanout_faulty_failures"] = failures
    b.details["fanout"] = {
        "runs": sb.settings.runs,
        "rows": rows,
        "latency_ms": latency_ms,
        "jobs_requests": requests,
        "sequential_seconds": walls["1"],
        "concurrent_8_seconds": walls["8"],
        "concurrent_32_seconds": walls["32"],
        "faulty_8_seconds": walls["8-faulty"],
        "faulty_exports": len(walls["8-faulty"]) + failures,
        "floor_seconds_at_8": floor,
        "sequential_floor_seconds": requests * latency_ms / 1000,
    }


def bench_rps(b: Bench, sb: Any) -> None:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    sb.clear_faults()
    os.environ["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = sb.connection_json
    token = QuamotionHook().get_token()
    env = b.env(sb, BENCH_TOKEN=token, BENCH_CA=sb.ca_path)
    seconds = "5" if not b.quick else "2"
    result = sandbox_rps(f"{sb.api_url}/api/version", env, seconds)
    b.results["sandbox_requests_per_s_50_clients"] = round(result["rps"], 1)
    b.details["rps"] = result


#: Client processes of the sandbox's ceiling measurement: one Python client process tops out before
#: the server does, so 50 clients are spread over several processes (their rates add up).
RPS_PROCESSES = 2


def sandbox_rps(url: str, env: dict[str, str], seconds: str, clients: int = 50) -> dict[str, Any]:
    """What the sandbox serves: ``clients`` keep-alive clients in :data:`RPS_PROCESSES` processes."""
    share = [clients // RPS_PROCESSES + (k < clients % RPS_PROCESSES) for k in range(RPS_PROCESSES)]
    with ThreadPoolExecutor(RPS_PROCESSES) as pool:
        parts = list(
            pool.map(
                lambda n: run_worker(
                    "rps", ["--url", url, "--clients", str(n), "--seconds", seconds], env=env
                ),
                share,
            )
        )
    return {
        "requests": sum(p["requests"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "seconds": max(p["seconds"] for p in parts),
        "rps": sum(p["rps"] for p in parts),
        "processes": RPS_PROCESSES,
        "latency_p50_ms": max(p["latency_p50_ms"] for p in parts),
        "latency_p99_ms": max(p["latency_p99_ms"] for p in parts),
    }


def bench_imports(b: Bench) -> None:
    candidates = [
        "airflow_provider_quamotion.operators.quamotion",
        "airflow_provider_quamotion.operators.test_run",
        "airflow_provider_quamotion.sensors.quamotion",
    ]
    root = Path(__file__).resolve().parent.parent
    modules = [m for m in candidates if (root / (m.replace(".", "/") + ".py")).exists()]
    env = worker_env("{}", b.airflow_home)
    # What a DAG processor pays: the modules' bytecode cached (pip compiles it at install). Without this
    # an environment with PYTHONDONTWRITEBYTECODE compiles every edited module again in each sample.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    args = ["--modules", ",".join(modules)]
    run_worker("imports", args, env=env)  # the warm-up writes the bytecode; not a sample
    runs = [run_worker("imports", args, env=env) for _ in range(b.size(15, 5))]
    b.results["parse_import_overhead_ms"] = round(median([r["ms"] for r in runs]), 1)
    b.details["imports"] = {
        "modules": modules,
        "samples_ms": [round(r["ms"], 1) for r in runs],
        "new_modules": runs[-1]["new_modules"],
        "heavy_loaded": runs[-1]["heavy_loaded"],
    }


def bench_export_memory(b: Bench) -> None:
    small_runs, big_runs = 10_000, b.size(1_000_000, 100_000)
    peaks: dict[int, dict[str, Any]] = {}
    for runs in (small_runs, big_runs):
        with b.sandbox(f"export-{runs}", runs=runs, seed=0) as sb:
            dest = b.scratch / f"export-{runs}.jsonl"
            samples = [
                run_worker("export", ["--resource", "test_runs", "--dest", str(dest)], env=b.env(sb))
                for _ in range(2)
            ]
            dest.unlink(missing_ok=True)
        peaks[runs] = {
            "peak_rss_kb": median([s["peak_rss_kb"] for s in samples]),
            "baseline_peak_rss_kb": median([s["baseline_peak_rss_kb"] for s in samples]),
            "rows": samples[0]["rows"],
            "seconds": [round(s["seconds"], 2) for s in samples],
        }
    b.results["export_1m_peak_rss_over_10k"] = round(
        peaks[big_runs]["peak_rss_kb"] / peaks[small_runs]["peak_rss_kb"], 3
    )
    b.details["export_memory"] = {str(k): v for k, v in peaks.items()}


def bench_throughput(b: Bench) -> None:
    runs = b.size(200_000, 30_000)
    with b.sandbox(f"throughput-{runs}", runs=runs, seed=0) as sb:
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

        os.environ["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = sb.connection_json
        hook = QuamotionHook()
        url, token = hook.url_for("testRun"), hook.get_token()
        hook.close()
        env = b.env(sb, BENCH_TOKEN=token, BENCH_CA=sb.ca_path)
        provider: list[dict[str, Any]] = []
        naive: list[dict[str, Any]] = []
        for _ in range(b.size(3, 2)):
            dest = b.scratch / "throughput.jsonl"
            provider.append(
                run_worker("export", ["--resource", "test_runs", "--dest", str(dest), "--warm"], env=env)
            )
            naive.append(run_worker("naive", ["--url", url, "--dest", str(dest)], env=env))
            dest.unlink(missing_ok=True)
    p_rate = median([r["rows"] / r["seconds"] for r in provider])
    n_rate = median([r["rows"] / r["seconds"] for r in naive])
    b.results["export_throughput_vs_naive"] = round(p_rate / n_rate, 2)
    b.details["throughput"] = {
        "runs": runs,
        "provider_records_per_s": round(p_rate),
        "naive_records_per_s": round(n_rate),
        "provider_peak_rss_kb": median([r["peak_rss_kb"] for r in provider]),
        "naive_peak_rss_kb": median([r["peak_rss_kb"] for r in naive]),
    }


@contextlib.contextmanager
def moto_server(b: Bench) -> Iterator[Any]:
    """moto's S3 server on a free loopback port (the storage tests' own), a ``lake`` bucket in it."""
    import socket

    from tests.storage.conftest import MotoS3, serve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = Path(sys.executable).with_name("moto_server")
    log = b.scratch / "moto-access.log"
    with serve([str(server), "-H", "127.0.0.1", "-p", str(port)], port, log, "moto_server") as process:
        moto = MotoS3(f"http://127.0.0.1:{port}", log, process)
        import boto3

        boto3.client(
            "s3",
            endpoint_url=moto.url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket="lake")
        yield moto


def bench_s3(b: Bench) -> None:
    """Peak RSS of a 500k-run export to S3 (moto's server) over the same export to a local file; the
    requests one small file costs."""
    runs = b.size(500_000, 50_000)
    with moto_server(b) as moto, b.sandbox(f"s3-{runs}", runs=runs, seed=0) as sb:
        env = b.env(sb, AIRFLOW_CONN_S3_LAKE=moto.connection_json, NO_PROXY="127.0.0.1,localhost")
        local = b.scratch / "s3-local.jsonl"
        samples: dict[str, list[dict[str, Any]]] = {"local": [], "s3": []}
        for _ in range(2):
            for where, dest in (("local", str(local)), ("s3", "s3://s3_lake@lake/bench/test_runs.jsonl")):
                samples[where].append(
                    run_worker("export", ["--resource", "test_runs", "--dest", dest], env=env)
                )
        local.unlink(missing_ok=True)
        small: list[int] = []
        for n in range(3):
            mark = moto.mark()
            run_worker(
                "export", ["--resource", "projects", "--dest", f"s3://s3_lake@lake/bench/p{n}.jsonl"], env=env
            )
            small.append(len(moto.since(mark)))
    peak = {k: median([s["peak_rss_kb"] for s in v]) for k, v in samples.items()}
    b.results["s3_export_peak_rss_over_local"] = round(peak["s3"] / peak["local"], 3)
    b.results["s3_requests_per_small_file"] = median(small)
    b.details["s3"] = {
        "runs": runs,
        "peak_rss_kb": peak,
        "rows": samples["s3"][0]["rows"],
        "seconds": {k: [round(s["seconds"], 2) for s in v] for k, v in samples.items()},
        "small_file_requests": small,
    }


@contextlib.contextmanager
def bench_postgres(b: Bench) -> Iterator[str]:
    """A PostgreSQL server of the benchmark's own (scripts/postgres.sh, its own folder and port)."""
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    folder = tempfile.mkdtemp(prefix="qm-bench-pg-", dir="/tmp")  # short: the socket lives there
    env = {**os.environ, "QUAMOTION_PG_DIR": folder, "QUAMOTION_PG_PORT": str(port)}
    script = Path(__file__).resolve().parent.parent / "scripts" / "postgres.sh"
    out = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/postgres.sh start failed: {out.stderr}")
    try:
        yield out.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, capture_output=True, check=False)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def bench_warehouse(b: Bench) -> None:
    """The SQL export into PostgreSQL (200k runs, end to end incl. the HTTPS fetch) against fetch-then-COPY
    and requests + pandas ``to_sql(method="multi")``, side by side."""
    runs = b.size(200_000, 30_000)
    with bench_postgres(b) as uri, b.sandbox(f"warehouse-{runs}", runs=runs, seed=0) as sb:
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

        os.environ["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = sb.connection_json
        hook = QuamotionHook()
        url, token = hook.url_for("testRun"), hook.get_token()
        hook.close()
        env = b.env(sb, BENCH_TOKEN=token, BENCH_CA=sb.ca_path, AIRFLOW_CONN_BENCH_PG=uri)
        times: dict[str, list[float]] = {"provider": [], "copy": [], "pandas": []}
        rows: dict[str, int] = {}
        for n in range(b.size(3, 1)):
            for name, worker, extra in (
                ("provider", "sql", ["--sql-conn-id", "bench_pg", "--table", f"runs_provider_{n}"]),
                ("copy", "copy_baseline", ["--url", url, "--uri", uri, "--table", f"runs_copy_{n}"]),
                ("pandas", "pandas_baseline", ["--url", url, "--uri", uri, "--table", f"runs_pandas_{n}"]),
            ):
                if name == "pandas" and n > 0:
                    continue  # minutes per run: one sample
                result = run_worker(worker, extra, env=env, timeout=3600)
                times[name].append(result["seconds"])
                rows[name] = result["rows"]
    seconds = {k: median(v) for k, v in times.items()}
    b.results["sql_load_ratio_to_copy"] = round(seconds["copy"] / seconds["provider"], 2)
    b.results["sql_load_ratio_to_pandas"] = round(seconds["pandas"] / seconds["provider"], 2)
    b.details["warehouse"] = {
        "runs": runs,
        "rows": rows,
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }


CHAOS_FAULTS: dict[str, Any] = {
    # 20% of API requests fail: 8% 429, 8% 503 (Retry-After: 0) and 4% dropped connections.
    "rules": [
        {"path": r"^/(api|project)/", "status": [429, 429, 503, 503, "drop"], "rate": 0.2, "retry_after": 0},
    ]
}
CHAOS_WINDOWS = 12


def chaos_windows(sb: Any, count: int) -> list[tuple[str | None, str | None]]:
    """``count`` consecutive ``[since, until)`` windows covering the sandbox's history (open at both ends)."""
    import datetime as dt

    anchor, span = sb.settings.anchor, sb.settings.days * 86400
    cuts = [anchor - span + span * k / count for k in range(1, count)]
    iso = [dt.datetime.fromtimestamp(c, dt.timezone.utc).isoformat() for c in cuts]
    return list(zip([None, *iso], [*iso, None], strict=True))


def bench_chaos(b: Bench) -> None:
    runs = b.size(15_000, 2_000)
    with b.sandbox(f"chaos-{runs}", runs=runs, seed=1) as sb:
        out = b.scratch / "chaos"
        out.mkdir()
        windows = chaos_windows(sb, CHAOS_WINDOWS)
        sb.set_faults(CHAOS_FAULTS)
        sb.reset_counters()
        with sb.revoking_tokens(3.0) as revocations:
            result = run_worker(
                "chaos",
                ["--dir", str(out), "--attempts", "3", "--parallel", "4", "--windows", json.dumps(windows)],
                env=b.env(sb),
                timeout=1200,
            )
        counters = sb.counters()
        sb.clear_faults()
        lost = dup = total = 0
        for resource, expected in (
            ("test_runs", sb.expected_test_runs()),
            ("jobs", sb.expected_jobs(run_id_key="testRunId")),
        ):
            files = sorted(out.glob(f"{resource}-*.jsonl"))
            got = (record for path in files for record in _records(path))
            lo, du, n = compare(got, expected)
            lost, dup, total = lost + lo, dup + du, total + n
    tasks = result["tasks"]
    b.results["chaos_records_lost"] = lost
    b.results["chaos_records_duplicated"] = dup
    b.details["chaos"] = {
        "runs": runs,
        "expected_records": total,
        "faults": CHAOS_FAULTS,
        "windows": len(windows),
        "revocations": revocations[0],
        "requests": counters["requests"],
        "faults_injected": counters["faults_injected"],
        "tokens_issued": counters["tokens_issued"],
        "status": counters["status"],
        "seconds": round(result["seconds"], 1),
        "tasks": len(tasks),
        "task_attempts": sum(t["attempts"] for t in tasks),
        "tasks_failed": sum(1 for t in tasks if t["rows"] is None),
        "errors": [e for t in tasks for e in t["errors"]][:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="scaled-down smoke run (not reference figures)")
    parser.add_argument("--only", default="", help=f"comma list of {', '.join(ALL)}")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.json/.md go")
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(ALL)
    unknown = set(chosen) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    started = time.monotonic()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="quamotion-bench-") as scratch:
        b = Bench(Path(scratch), args.quick)
        os.environ["AIRFLOW_HOME"] = str(b.airflow_home)

        def timed(name: str, fn: Callable[[], None]) -> None:
            if name not in chosen:
                return
            print(f"- {name}", flush=True)
            t = time.monotonic()
            fn()
            timings[name] = round(time.monotonic() - t, 1)
            print(f"  done in {timings[name]} s", flush=True)

        if {"tokens", "triggers", "fanout", "rps"} & set(chosen):
            with b.sandbox("main", runs=b.size(2000, 300), seed=0, queue_seconds=4.0, run_seconds=6.0) as sb:
                timed("tokens", lambda: bench_tokens(b, sb))
                timed("fanout", lambda: bench_fanout(b, sb))  # before triggers add runs to the list
                timed("triggers", lambda: bench_triggers(b, sb))
                timed("rps", lambda: bench_rps(b, sb))  # last: 50 clients' load must not linger into others
        timed("triggers_10k", lambda: bench_triggers_10k(b))
        timed("imports", lambda: bench_imports(b))
        timed("export_memory", lambda: bench_export_memory(b))
        timed("throughput", lambda: bench_throughput(b))
        timed("chaos", lambda: bench_chaos(b))
        timed("s3", lambda: bench_s3(b))
        timed("warehouse", lambda: bench_warehouse(b))
    document = {
        **b.results,
        "goals": {k: v for k, v in GOALS.items() if k in b.results},
        "details": b.details,
        "machine": machine_info(),
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "benchmark_seconds": timings,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print()
    print(render_table(document))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "latest.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    (args.output / "latest.md").write_text(render_markdown(document))
    print(f"\nwrote {args.output / 'latest.json'} and latest.md in {document['seconds']} s")


if __name__ == "__main__":
    main()
