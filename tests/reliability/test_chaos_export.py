"""Exports under faults lose nothing and duplicate nothing; a killed export leaves no partial output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.storage import TEMP_MARKER
from tests.reliability.conftest import multiset, read_jsonl

#: 15% of API requests fail: 429 and 503 (Retry-After: 0) and dropped connections.
FAULTS = {
    "rules": [
        {"path": r"^/(api|project)/", "status": [429, 429, 503, 503, "drop"], "rate": 0.15, "retry_after": 0}
    ]
}
#: Task attempts, as an Airflow task with ``retries=2`` would have.
ATTEMPTS = 3


def export(resource: str, destination: Path, **kwargs: Any) -> dict[str, Any]:
    operator = QuamotionExportOperator(
        task_id=f"export_{resource}", resource=resource, destination=str(destination), **kwargs
    )
    return operator.execute(context={})


def export_with_retries(resource: str, destination: Path) -> tuple[dict[str, Any], list[str]]:
    """Run the export like an Airflow task with retries: a failed try is run again from scratch."""
    errors: list[str] = []
    for _ in range(ATTEMPTS):
        try:
            return export(resource, destination), errors
        except Exception as err:  # what Airflow would retry
            errors.append(f"{type(err).__name__}: {err}")
            assert not destination.exists(), "a failed try left output behind"
    raise AssertionError(f"{resource}: every try failed: {errors}")


def test_chaos_export_equals_the_sandbox_records_exactly(chaos_conn: Sandbox, tmp_path: Path) -> None:
    sb = chaos_conn
    expected_runs = list(sb.expected_test_runs())
    expected_jobs = list(sb.expected_jobs(run_id_key="testRunId"))
    assert len(expected_runs) + len(expected_jobs) >= 5000
    sb.set_faults(FAULTS)
    with sb.revoking_tokens(1.0) as revocations:
        runs_summary, _ = export_with_retries("test_runs", tmp_path / "runs.jsonl")
        jobs_summary, _ = export_with_retries("jobs", tmp_path / "jobs.jsonl")
    counters = sb.counters()

    runs, jobs = read_jsonl(tmp_path / "runs.jsonl"), read_jsonl(tmp_path / "jobs.jsonl")
    assert runs == expected_runs  # same records, same order, nothing lost or repeated
    assert jobs == expected_jobs
    assert multiset(jobs) == multiset(expected_jobs)
    assert (runs_summary["rows"], jobs_summary["rows"]) == (len(expected_runs), len(expected_jobs))
    # The chaos really happened: faults of every kind, and requests refused after a revocation.
    assert revocations[0] >= 2
    assert counters["status"].get("429", 0) > 0
    assert counters["status"].get("503", 0) > 0
    assert counters["status"].get("drop", 0) > 0
    assert counters["status"].get("401", 0) > 0
    assert counters["tokens_issued"] >= 2


KILLABLE_EXPORT = textwrap.dedent(
    """
    import sys
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    QuamotionExportOperator(
        task_id="export_jobs", resource="jobs", destination=sys.argv[1], max_concurrency=2
    ).execute(context={})
    print("finished")
    """
)


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if TEMP_MARKER in p.name]


def test_export_killed_mid_way_leaves_no_partial_output_and_the_rerun_matches(
    chaos_conn: Sandbox, tmp_path: Path
) -> None:
    sb = chaos_conn
    out = tmp_path / "out"
    out.mkdir()
    destination = out / "jobs.jsonl"
    sb.set_faults(path=r"/jobs$", latency_ms=10)  # ~10 s for the whole export: time to kill it
    env = {**os.environ, "AIRFLOW_CONN_QUAMOTION_DEFAULT": sb.connection_json}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE_EXPORT, str(destination)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while not _temp_files(out):
            assert proc.poll() is None, (
                f"the export ended before it could be killed: {proc.communicate()[0]!r}"
            )
            assert time.monotonic() < deadline, "the export never started writing"
            time.sleep(0.05)
        time.sleep(1.0)  # well into the export
        assert proc.poll() is None, "the export finished before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert not destination.exists(), "a killed export left a partial file at the destination"
    leftovers = _temp_files(out)
    # SIGKILL runs no cleanup: the hidden temporary object may stay, never under the destination's name.
    assert all(p.name.startswith(".") and p.name != destination.name for p in leftovers)
    assert {p.name for p in out.iterdir()} == {p.name for p in leftovers}

    sb.clear_faults()
    summary = export("jobs", destination)
    expected = list(sb.expected_jobs(run_id_key="testRunId"))
    assert read_jsonl(destination) == expected
    assert summary["rows"] == len(expected)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_failing_after_its_retries_leaves_the_previous_output_untouched(
    chaos_conn: Sandbox, tmp_path: Path, fmt: str
) -> None:
    sb = chaos_conn
    destination = tmp_path / f"runs.{fmt}"
    export("test_runs", destination, format=fmt)
    before = destination.read_bytes()
    # The list streams, then the connection drops for good mid-way through the jobs fan-out.
    sb.set_faults(path=r"/jobs$", status=503, retry_after=0)
    with pytest.raises(Exception, match=r"HTTP 503"):
        export("jobs", destination, format=fmt)
    assert destination.read_bytes() == before
    assert not _temp_files(tmp_path)
