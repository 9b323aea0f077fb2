"""A real S3 endpoint for the object storage tests: moto's server on a free loopback port.

The server runs as a subprocess for the whole session and is stopped by its PID at the end (also
when a test fails). Airflow reaches it through an ``aws`` connection whose extra has ``endpoint_url``;
s3fs, through the amazon provider, does the rest. Requests are counted from the server's access log.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CONN_ID = "s3_lake"
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoS3:
    """A running moto server: its URL, its access log and the connection that reaches it."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def connection_json(self) -> str:
        return json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": self.url, "region_name": "us-east-1"},
            }
        )

    def requests(self) -> list[tuple[str, str]]:
        """Every S3 request the server has answered so far, ``(method, target)``, in order."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LOG_LINE.search(line)
            if match and not match["target"].startswith("/moto-api"):
                out.append((match["method"], match["target"]))
        return out

    def mark(self) -> int:
        """The number of requests so far (pass it to :meth:`since`)."""
        time.sleep(0.2)  # the access log line is written after the reply
        return len(self.requests())

    def since(self, mark: int) -> list[tuple[str, str]]:
        time.sleep(0.2)
        return self.requests()[mark:]

    def reset(self) -> None:
        """Forget every bucket and object (moto's own API)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass


@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "access.log"
    server = Path(sys.executable).with_name("moto_server")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=sink, stderr=subprocess.STDOUT, env=env
        )
    moto = MotoS3(f"http://127.0.0.1:{port}", log, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield moto
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def s3(moto_s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh ``lake`` bucket and the ``s3_lake`` connection; yields the s3fs filesystem."""
    moto_s3.reset()
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", moto_s3.connection_json)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    from airflow.sdk import ObjectStoragePath

    fs = ObjectStoragePath(f"s3://{CONN_ID}@lake/").fs
    fs.mkdir("lake")
    fs.invalidate_cache()
    yield fs
    fs.invalidate_cache()


def pending_uploads(fs: Any, bucket: str = "lake") -> list[dict[str, Any]]:
    """The bucket's incomplete multipart uploads (which no object listing shows)."""
    return list(fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", []) or [])


def objects(fs: Any, bucket: str = "lake") -> list[str]:
    """Every object key in the bucket, fresh from the server."""
    listing = fs.call_s3("list_objects_v2", Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []) or [])
