"""An export to S3 killed with SIGKILL mid-upload, then rerun: exactly the right object, nothing pending.

The export runs in a subprocess against a sandbox of 20,000 test runs (8 MB of jsonl) whose reply
trickles out over 10 s, so the writer is caught with a multipart upload started and not completed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.storage.conftest import CONN_ID, objects, pending_uploads

KEY = "q/test_runs.jsonl"
URI = f"s3://{CONN_ID}@lake/{KEY}"

_EXPORT = textwrap.dedent(
    """
    import sys
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    QuamotionExportOperator(task_id="t", resource="test_runs", destination=sys.argv[1]).execute({})
    """
)


@pytest.fixture(scope="module")
def big_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("big-sandbox"), runs=20_000, seed=0) as sb:
        yield sb


def test_a_killed_export_then_a_rerun_leave_exactly_the_object(
    big_sandbox: Sandbox, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", big_sandbox.connection_json)
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    local = tmp_path / "test_runs.jsonl"
    QuamotionExportOperator(task_id="t", resource="test_runs", destination=str(local)).execute({})
    assert local.stat().st_size > 6 * 1024 * 1024  # more than one 5 MiB part

    big_sandbox.set_faults(path=r"/testRun$", slow_body_ms=10_000)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _EXPORT, URI], env=dict(os.environ))
        try:
            deadline = time.monotonic() + 60
            while not pending_uploads(s3):
                assert proc.poll() is None, "the export ended before it was killed"
                assert time.monotonic() < deadline, "no multipart upload started"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        big_sandbox.clear_faults()
    assert proc.returncode == -signal.SIGKILL
    assert len(pending_uploads(s3)) == 1  # the killed writer's parts: stored, billed, unlisted
    assert objects(s3) == []

    QuamotionExportOperator(task_id="t", resource="test_runs", destination=URI).execute({})
    s3.invalidate_cache()
    assert bytes(s3.cat_file(f"lake/{KEY}")) == local.read_bytes()
    assert objects(s3) == [KEY]
    assert pending_uploads(s3) == []
