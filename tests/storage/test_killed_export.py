"""An export to S3 or Azure killed with SIGKILL mid-upload, then rerun: exactly the object, nothing left.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.storage.conftest import CONN_ID, Container, objects, pending_uploads

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


@dataclass
class Store:
    """What a test sees of one store: the destination, what is visible, what a killed writer left."""

    uri: str
    visible: Callable[[], list[str]]
    leftovers: Callable[[], list[Any]]
    read: Callable[[], bytes]


@pytest.fixture(params=["s3", "azure"])
def store(request: pytest.FixtureRequest) -> Store:
    if request.param == "s3":
        s3 = request.getfixturevalue("s3")

        def read_s3() -> bytes:
            s3.invalidate_cache()
            return bytes(s3.cat_file(f"lake/{KEY}"))

        return Store(URI, lambda: objects(s3), lambda: pending_uploads(s3), read_s3)
    az: Container = request.getfixturevalue("az")
    return Store(az.uri(KEY), az.blobs, lambda: az.uncommitted_blocks(KEY), lambda: az.read(KEY))


def test_a_killed_export_then_a_rerun_leave_exactly_the_object(
    big_sandbox: Sandbox, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", big_sandbox.connection_json)
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    local = tmp_path / "test_runs.jsonl"
    QuamotionExportOperator(task_id="t", resource="test_runs", destination=str(local)).execute({})
    assert local.stat().st_size > 6 * 1024 * 1024  # more than one 5 MiB part

    big_sandbox.set_faults(path=r"/testRun$", slow_body_ms=10_000)
    try:
        proc = subprocess.Popen([sys.executable, "-c", _EXPORT, store.uri], env=dict(os.environ))
        try:
            deadline = time.monotonic() + 60
            while not store.leftovers():
                assert proc.poll() is None, "the export ended before it was killed"
                assert time.monotonic() < deadline, "no multipart upload started"
                time.sleep(0.05)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    finally:
        big_sandbox.clear_faults()
    assert proc.returncode == -signal.SIGKILL
    assert store.leftovers()  # the killed writer's parts (S3) or blocks (Azure): stored, unlisted
    assert store.visible() == []

    QuamotionExportOperator(task_id="t", resource="test_runs", destination=store.uri).execute({})
    assert store.read() == local.read_bytes()
    assert store.visible() == [KEY]
    assert store.leftovers() == []
