"""The storage tests' servers (moto's S3, Azurite) stop when the pytest session ends, also on failure.

A pytest session in a subprocess uses both session fixtures, records their PIDs and fails; after it,
neither process may be running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.dag_runs import REPO
from tests.export.conftest import pid_alive

PROBE = """
import os

def test_uses_both_servers(moto_s3, azurite):
    with open(os.environ["QM_PIDS"], "w") as out:
        out.write(f"{moto_s3.process.pid} {azurite.process.pid}")

def test_fails(moto_s3, azurite):
    raise AssertionError("a failing test: the servers must stop anyway")
"""


def test_the_servers_are_stopped_by_pid_when_the_session_fails(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    pids = tmp_path / "pids"
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.storage.conftest"]
    out = subprocess.run(
        [*pytest, "--rootdir", str(tmp_path), str(probe)],
        env={**os.environ, "PYTHONPATH": str(REPO), "QM_PIDS": str(pids)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    started = [int(p) for p in pids.read_text().split()]
    assert len(started) == 2
    assert [pid for pid in started if pid_alive(pid)] == []
