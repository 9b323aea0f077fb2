"""The benchmark table: goals, verdicts, and the Markdown page the docs show."""

from __future__ import annotations

from typing import Any

#: The 10,000-trigger goals, measured twice: with Python's default collector and tuned.
_TRIGGER_10K: dict[str, tuple[str, str, float | None]] = {
    "trigger_10k_timeouts": (
        "10,000 test-run triggers (poll 2 s, runs ~60 s) in one event loop: timeouts",
        "==",
        0,
    ),
    "trigger_10k_loop_lag_p99_ms": ("event-loop lag p99 during those 10,000 triggers, ms", "<=", 100),
    "trigger_10k_loop_lag_max_ms": ("event-loop lag max during those 10,000 triggers, ms", "<=", 1000),
    "trigger_10k_token_requests": ("token requests of those 10,000 triggers", "<=", 1),
    "trigger_10k_requests_per_s_over_ideal": (
        "their polls/s / min(triggers / poll interval, what the sandbox serves)",
        ">=",
        0.8,
    ),
}

#: key -> (what, comparison, goal); comparison is "<=", ">=", "==" or "report".
GOALS: dict[str, tuple[str, str, float | None]] = {
    "token_requests_per_1000_calls": (
        "token requests, 1,000 API calls through fresh hooks in one process",
        "<=",
        1,
    ),
    "trigger_token_requests": ("token requests, 1,000 test-run triggers polling in one event loop", "<=", 1),
    "trigger_loop_lag_p99_ms": ("event-loop lag p99 during those triggers, ms", "<=", 100),
    "peak_rss_per_trigger_kb": ("peak RSS per trigger, KiB", "report", None),
    **_TRIGGER_10K,
    # the same goals for the run with the collector tuned (tuning.tune_triggerer_gc, the Sizing page)
    **{
        key.replace("trigger_10k_", "trigger_10k_gc_tuned_"): (f"{what} (collector tuned)", op, goal)
        for key, (what, op, goal) in _TRIGGER_10K.items()
    },
    "export_1m_peak_rss_over_10k": ("peak RSS exporting 1,000,000 test runs / 10,000", "<=", 1.5),
    "s3_export_peak_rss_over_local": (
        "peak RSS exporting 500,000 test runs to S3 (moto) / to a local file",
        "<=",
        1.2,
    ),
    "s3_requests_per_small_file": ("S3 requests of a small file's export (moto's access log)", "<=", 3),
    "sql_load_ratio_to_copy": (
        "PostgreSQL, 200,000 runs end to end: fetch-then-COPY time / SQL export time",
        ">=",
        1.5,
    ),
    "sql_load_ratio_to_pandas": (
        "the same: requests + pandas to_sql(method='multi') time / SQL export time",
        ">=",
        7,
    ),
    "export_throughput_vs_naive": ("records/s of the export operator / naive requests + .json()", ">=", 1.0),
    "jobs_fanout_speedup_vs_sequential": ("jobs export, 2,000 runs, 20 ms latency: 8-way / 1-way", ">=", 6),
    "jobs_fanout_ratio_to_floor": ("8-way wall time / (requests x latency / 8)", "report", None),
    "jobs_fanout_32_ratio_to_floor": ("32-way wall time / (requests x latency / 32)", "<=", 1.3),
    "jobs_fanout_faulty_over_clean": (
        "8-way wall time with 20% 429/503/drop (Retry-After: 0) / clean",
        "<=",
        1.5,
    ),
    "jobs_fanout_faulty_failures": ("exports failed outright, of 10 faulty 8-way exports", "==", 0),
    "parse_import_overhead_ms": (
        "median import of operator + sensor modules on top of airflow.sdk, ms",
        "<=",
        10,
    ),
    "chaos_records_lost": ("chaos export (>= 50,000 runs + jobs, 20% faults, revoked tokens): lost", "==", 0),
    "chaos_records_duplicated": ("chaos export: duplicated", "==", 0),
    "sandbox_requests_per_s_50_clients": (
        "sandbox GET /api/version (authorized), 50 clients, req/s",
        "report",
        None,
    ),
}


def verdict(key: str, value: float | None) -> str:
    """``met``, ``MISSED`` or ``-`` (report only / not measured)."""
    if value is None or key not in GOALS:
        return "-"
    _, op, goal = GOALS[key]
    if op == "report" or goal is None:
        return "-"
    ok = value <= goal if op == "<=" else value >= goal if op == ">=" else value == goal
    return "met" if ok else "MISSED"


def goal_text(key: str) -> str:
    _, op, goal = GOALS[key]
    return "report" if op == "report" else f"{op} {goal:g}" if op != "==" else f"{goal:g}"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:,}"


def rows(document: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """``(key, value, goal, verdict, what)`` for every measured key."""
    out = []
    for key, (what, _, _) in GOALS.items():
        if key in document:
            out.append((key, _fmt(document[key]), goal_text(key), verdict(key, document[key]), what))
    return out


def render_table(document: dict[str, Any]) -> str:
    """A plain-text table for the terminal."""
    table = rows(document)
    widths = [max(len(r[i]) for r in [("key", "value", "goal", "verdict", "what"), *table]) for i in range(4)]
    lines = []
    for r in [("key", "value", "goal", "verdict", "what"), *table]:
        lines.append(
            "  ".join(r[i].ljust(widths[i]) if i != 1 else r[i].rjust(widths[i]) for i in range(4))
            + "  "
            + r[4]
        )
    return "\n".join(lines)


def render_markdown(document: dict[str, Any]) -> str:
    """The docs page: the table, the details that explain it, how to reproduce, the machine."""
    d = document.get("details", {})
    m = document.get("machine", {})
    out = ["# Benchmarks", ""]
    if document.get("quick"):
        out += ["> A `--quick` smoke run: scaled-down workloads, not the reference figures.", ""]
    out += [
        f"Measured {document.get('measured_at', '?')} by `make bench` in {document.get('seconds', '?')} s, "
        "against the local sandbox (a separate process, TLS on loopback). Figures are medians and ratios "
        "measured side by side in one run; the machines are noisy, so read absolute times as indications.",
        "",
        "| key | value | goal | verdict | what |",
        "|---|---:|---|---|---|",
    ]
    out += [f"| `{k}` | {v} | {g} | {ver} | {w} |" for k, v, g, ver, w in rows(document)]
    out += ["", "## Details", ""]
    if "tokens" in d:
        t = d["tokens"]
        out.append(
            f"- Tokens: {t['calls']} calls through fresh `QuamotionHook` instances made {t['requests']} requests "
            f"and {t['tokens_issued']} token request(s) in {t['seconds']:.1f} s."
        )
    if "triggers" in d:
        t = d["triggers"]
        out.append(
            f"- Triggers: {t['triggers']} `QuamotionTestRunTrigger`s (poll every 2 s) finished in {t['seconds']:.1f} s "
            f"with {t['statuses']}; {t['requests']} requests ({t['project_lookups']} project look-ups); loop lag "
            f"p50 {t['lag_p50_ms']:.1f} ms, p99 {t['lag_p99_ms']:.1f} ms, max {t['lag_max_ms']:.0f} ms; RSS "
            f"{t['rss_before_kb'] / 1024:.0f} MiB before, {t['rss_peak_kb'] / 1024:.0f} MiB peak."
        )
    if "triggers_10k" in d:
        t = d["triggers_10k"]
        out.append(
            f"- 10,000 triggers: {t['triggers']:,} `QuamotionTestRunTrigger`s (poll every {t['poll_seconds']:g} s, "
            f"runs finishing ~60 s after they start) finished in {t['seconds']:.1f} s with {t['statuses']}; "
            f"{t['polls']:,} polls, {t['polls_per_s']:,.0f}/s while active (ideal {t['ideal_polls_per_s']:,.0f}/s: "
            f"triggers / interval, capped by the sandbox's own {t['sandbox_jobs_requests_per_s_50_clients']:,.0f} "
            f"req/s for the same request); loop lag p50 {t['lag_p50_ms']:.1f} ms, p99 {t['lag_p99_ms']:.1f} ms, "
            f"max {t['lag_max_ms']:.0f} ms; RSS {t['rss_before_kb'] / 1024:.0f} MiB before, "
            f"{t['rss_peak_kb'] / 1024:.0f} MiB peak ({t['peak_rss_per_trigger_kb']:.1f} KiB per trigger)."
        )
    if "export_memory" in d:
        parts = [
            f"{int(k):,} runs: peak {v['peak_rss_kb'] / 1024:.0f} MiB (after imports {v['baseline_peak_rss_kb'] / 1024:.0f} MiB), "
            f"{v['seconds']} s"
            for k, v in d["export_memory"].items()
        ]
        out.append("- Export memory (test_runs to jsonl, fresh process each): " + "; ".join(parts) + ".")
    if "throughput" in d:
        t = d["throughput"]
        out.append(
            f"- Throughput ({t['runs']:,} runs to jsonl): export operator {t['provider_records_per_s']:,} records/s "
            f"(peak {t['provider_peak_rss_kb'] / 1024:.0f} MiB), naive {t['naive_records_per_s']:,} records/s "
            f"(peak {t['naive_peak_rss_kb'] / 1024:.0f} MiB)."
        )
    if "fanout" in d:
        f = d["fanout"]
        out.append(
            f"- Jobs fan-out ({f['runs']:,} runs, {f['rows']:,} jobs, {f['latency_ms']} ms injected latency, "
            f"{f['jobs_requests']:,} job requests): 1-way {f['sequential_seconds']} s (floor "
            f"{f['sequential_floor_seconds']:.1f} s), 8-way {[round(x, 2) for x in f['concurrent_8_seconds']]} s "
            f"(floor {f['floor_seconds_at_8']:.1f} s)."
        )
    if "imports" in d:
        i = d["imports"]
        out.append(
            f"- Import overhead: {', '.join(f'`{x}`' for x in i['modules'])} on top of `airflow.sdk` "
            f"(with `DAG`, `BaseOperator`, `BaseSensorOperator` loaded); samples {i['samples_ms']} ms; "
            f"heavy libraries loaded by them: {i['heavy_loaded'] or 'none'}."
        )
    if "chaos" in d:
        c = d["chaos"]
        out.append(
            f"- Chaos: {c['runs']:,} runs, {c['expected_records']:,} records (runs + jobs) exported in {c['windows']} "
            f"windows ({c['tasks']} export tasks, 4 at a time, {c['seconds']} s); {c['requests']:,} requests, "
            f"{c['faults_injected']:,} faults injected (429/503/dropped, 20% of API requests), "
            f"{c['revocations']} token revocations, {c['tokens_issued']} tokens issued; {c['task_attempts']} task "
            f"attempts for {c['tasks']} tasks (a task whose request exhausts its retries is re-run, as Airflow's "
            f"task retries would), {c['tasks_failed']} failed for good."
        )
    if "rps" in d:
        r = d["rps"]
        out.append(
            f"- Sandbox: {r['requests']:,} authorized `GET /api/version` in {r['seconds']:.1f} s from 50 clients "
            f"(latency p50 {r['latency_p50_ms']:.1f} ms, p99 {r['latency_p99_ms']:.1f} ms, {r['errors']} errors)."
        )
    out += [
        "",
        "## Reproduce",
        "",
        "```",
        "make bench            # or: .venv/bin/python -m bench",
        ".venv/bin/python -m bench --quick            # a scaled-down smoke run",
        ".venv/bin/python -m bench --only chaos       # one benchmark",
        "```",
        "",
        "Each measurement that needs a clean process (memory, token counts, import time) runs in a fresh "
        "subprocess (`bench/workers.py`); the sandbox runs in its own process. The run writes "
        "`bench/results/latest.json` (the numeric keys above, plus `details` and `machine`) and this page.",
        "",
        "## Machine",
        "",
    ]
    out += [f"- {k}: {v}" for k, v in m.items()]
    return "\n".join(out) + "\n"
