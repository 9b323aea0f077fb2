"""The ``quamotion-sandbox`` command: connection.json, clean stop on signals, state reuse, fault flags."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from airflow_provider_quamotion.api import DEFAULT_RESOURCE
from airflow_provider_quamotion.sandbox.cli import build_parser, fault_config, main
from airflow_provider_quamotion.sandbox.faults import FaultRule

CLI = [sys.executable, "-m", "airflow_provider_quamotion.sandbox"]


def start(state_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "serve", "--state-dir", str(state_dir), "--port", "0", "--runs", "5", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_connection(state_dir: Path, process: subprocess.Popen[str]) -> dict:
    path = state_dir / "connection.json"
    deadline = time.monotonic() + 20
    while not path.exists():
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "connection.json never appeared"
        time.sleep(0.02)
    return json.loads(path.read_text())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_writes_connection_and_stops_cleanly(tmp_path: Path, sig: signal.Signals):
    process = start(tmp_path)
    try:
        conn = wait_for_connection(tmp_path, process)
        assert conn["conn_type"] == "quamotion"
        port = conn["host"].rsplit(":", 1)[1]
        assert conn["host"] == f"https://127.0.0.1:{port}"
        assert conn["extra"]["authority_host"] == f"https://localhost:{port}"
        assert conn["extra"]["resource"] == DEFAULT_RESOURCE
        assert Path(conn["extra"]["verify"]) == tmp_path / "ca.pem"
        assert conn["login"] and conn["password"] and conn["extra"]["api_key"] and conn["extra"]["tenant_id"]
        assert (tmp_path / "connection.json").stat().st_mode & 0o077 == 0  # holds secrets
        process.send_signal(sig)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert 'export AIRFLOW_CONN_QUAMOTION_DEFAULT="$(cat ' in output
    assert not (tmp_path / "connection.json").exists()


def test_state_is_reused_and_connection_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["connection", "--state-dir", str(tmp_path)]) == 1
    first = start(tmp_path, "--quiet")
    try:
        conn = wait_for_connection(tmp_path, first)
        ca = (tmp_path / "ca.pem").read_bytes()
        capsys.readouterr()
        assert main(["connection", "--state-dir", str(tmp_path)]) == 0
        assert json.loads(capsys.readouterr().out) == conn
        assert main(["connection", "--state-dir", str(tmp_path), "--export"]) == 0
        assert capsys.readouterr().out.startswith("export AIRFLOW_CONN_QUAMOTION_DEFAULT='{")
    finally:
        first.terminate()
        first.communicate(timeout=10)
    second = start(tmp_path, "--quiet")
    try:
        again = wait_for_connection(tmp_path, second)
    finally:
        second.terminate()
        second.communicate(timeout=10)
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert (again["login"], again["password"], again["extra"]["api_key"], again["extra"]["tenant_id"]) == (
        conn["login"],
        conn["password"],
        conn["extra"]["api_key"],
        conn["extra"]["tenant_id"],
    )


def test_fault_flags():
    args = build_parser().parse_args(
        [
            "serve",
            "--fault-rate",
            "0.2",
            "--fault-status",
            "429,503,drop",
            "--retry-after",
            "2",
            "--latency-ms",
            "20",
            "--fault-path",
            "^/api/",
        ]
    )
    config = fault_config(args)
    assert config is not None
    assert config.rules == [
        FaultRule(path="^/api/", status=[429, 503, "drop"], rate=0.2, retry_after=2, latency_ms=20)
    ]
    assert fault_config(build_parser().parse_args(["serve"])) is None
    only_rate = fault_config(build_parser().parse_args(["serve", "--fault-rate", "0.5"]))
    assert only_rate is not None and only_rate.rules[0].status == [429, 503]
    as_json = fault_config(
        build_parser().parse_args(["serve", "--faults-json", '{"rules": [{"sequence": [503]}]}'])
    )
    assert as_json is not None and as_json.rules[0].sequence == [503]


def test_bad_flags_fail_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["serve", "--state-dir", str(tmp_path), "--fault-status", "302"]) == 2
    assert "invalid fault 302" in capsys.readouterr().err
