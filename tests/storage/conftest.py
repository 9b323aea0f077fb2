"""Real object store endpoints for the storage tests, each a subprocess on a free loopback port.

* S3: moto's server. Airflow reaches it through an ``aws`` connection whose extra has ``endpoint_url``;
  s3fs, through the amazon provider, does the rest.
* Azure Blob: Azurite (npm), installed and run by ``scripts/azurite.sh``. Airflow reaches it through a
  ``wasb`` connection whose extra has Azurite's connection string; adlfs, through the microsoft-azure
  provider (``abfs://`` object storage paths), does the rest.

Each server runs for the whole session and is stopped by its PID at the end (also when a test fails).
Requests are counted from the servers' access logs (one line per request, the same format).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_quamotion import api
from tests.dag_runs import REPO
from tests.mocks import HOST, aiohttp_through, mock_aad, mock_projects

CONN_ID = "s3_lake"
AZ_CONN_ID = "azure_lake"
AZURITE_SH = REPO / "scripts" / "azurite.sh"
#: Azurite's account and its published development key (the same in every Azurite; not a secret).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


ROOT = f"{HOST}/project/acme/api/"
RUNS: list[dict[str, Any]] = [
    {"testRunId": f"r{n}", "scheduled": f"2024-01-02T{n:02d}:00:00+00:00", "appId": "a", "jobs": []}
    for n in range(1, 6)
]


def jobs_of(run_id: str) -> list[dict[str, Any]]:
    n = int(run_id[1:])
    return [
        {"id": n * 10 + k, "name": f"dev-{k}", "status": "success", "duration": 1.5, "hasArtifacts": True}
        for k in range(n % 3 + 1)
    ]


@pytest.fixture
def m() -> Any:
    """The Quamotion API (requests-mock): five runs on 2 January 2024 and their jobs."""
    with rm.Mocker() as mocker, aiohttp_through(mocker):
        mock_aad(mocker)
        mock_projects(mocker)
        mocker.get(ROOT + "testRun", json=RUNS)
        for run in RUNS:
            mocker.get(ROOT + api.test_run_jobs(run["testRunId"]), json=jobs_of(run["testRunId"]))
        yield mocker


def export(resource: str, fmt: str, destination: str) -> dict[str, Any]:
    """Run the export operator over the mocked API's 2 January 2024 into ``destination``."""
    from airflow_provider_quamotion.operators.quamotion import QuamotionExportOperator

    op = QuamotionExportOperator(
        task_id="t",
        resource=resource,
        format=fmt,
        destination=destination,
        since="2024-01-02T00:00:00Z",
        until="2024-01-03T00:00:00Z",
    )
    return op.execute({})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server subprocess: its URL and its access log."""

    url: str
    log: Path
    process: subprocess.Popen[bytes]
    #: request targets that are the emulator's own API, not the store's
    ignored_prefix = "/moto-api"

    def requests(self) -> list[tuple[str, str]]:
        """Every request the server has answered so far, ``(method, target)``, in order."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            match = _LOG_LINE.search(line)
            if match and not match["target"].startswith(self.ignored_prefix):
                out.append((match["method"], match["target"]))
        return out

    def mark(self) -> int:
        """The number of requests so far (pass it to :meth:`since`)."""
        time.sleep(0.2)  # the access log line is written after the reply
        return len(self.requests())

    def since(self, mark: int) -> list[tuple[str, str]]:
        time.sleep(0.2)
        return self.requests()[mark:]


@contextlib.contextmanager
def serve(
    command: list[str], port: int, log: Path, name: str, timeout: float = 180
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (a server on 127.0.0.1:``port``) until the block ends; stop it by its PID.

    :param command: the server's argv (it must be the server's own process: ``exec`` in a script).
    :param port: the loopback port it listens on once ready.
    :param log: where its stdout and stderr go (its access log).
    :param name: for the error when it does not start.
    :param timeout: seconds to wait for the port (includes an install on first use).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start:\n{log.read_text()[-4000:]}") from None
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


@dataclass
class MotoS3(Server):
    """A running moto server: its URL, its access log and the connection that reaches it."""

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
    with serve([str(server), "-H", "127.0.0.1", "-p", str(port)], port, log, "moto_server") as process:
        yield MotoS3(f"http://127.0.0.1:{port}", log, process)


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


@dataclass
class Azurite(Server):
    """A running Azurite blob service: its URL, its access log and the connections that reach it."""

    ignored_prefix = "/__none__"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
            f"BlobEndpoint={self.url}/{AZ_ACCOUNT};"
        )

    @property
    def connection_json(self) -> str:
        """A ``wasb`` connection: the connection string in the extra (what the provider reads first)."""
        return json.dumps({"conn_type": "wasb", "extra": {"connection_string": self.connection_string}})

    @property
    def account_connection_json(self) -> str:
        """A ``wasb`` connection by account name and key, the endpoint in ``host`` (no connection string)."""
        return json.dumps(
            {"conn_type": "wasb", "login": AZ_ACCOUNT, "password": AZ_KEY, "host": f"{self.url}/{AZ_ACCOUNT}"}
        )

    def service(self) -> Any:
        """A synchronous ``BlobServiceClient`` (the SDK's own view, for what fsspec does not show)."""
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service, installed (npm, into .azurite/) and run by ``scripts/azurite.sh``."""
    port = _free_port()
    folder = tmp_path_factory.mktemp("azurite")
    log = folder / "access.log"
    command = ["bash", str(AZURITE_SH), "run", str(port), str(folder / "data")]
    with serve(command, port, log, "Azurite") as process:
        yield Azurite(f"http://127.0.0.1:{port}", log, process)


@dataclass
class Container:
    """A fresh blob container of one test, reached through the ``azure_lake`` connection."""

    name: str
    fs: Any
    client: Any

    def uri(self, key: str) -> str:
        return f"abfs://{AZ_CONN_ID}@{self.name}/{key}"

    def read(self, key: str) -> bytes:
        return bytes(self.client.download_blob(key).readall())

    def blobs(self) -> list[str]:
        """The committed (visible) blobs, fresh from the service."""
        return sorted(blob.name for blob in self.client.list_blobs())

    def uncommitted_blocks(self, key: str) -> list[str]:
        """The ids of ``key``'s staged blocks that no commit included (invisible, kept up to a week)."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            _, uncommitted = self.client.get_blob_client(key).get_block_list("uncommitted")
        except ResourceNotFoundError:  # no block staged yet
            return []
        return [block.id for block in uncommitted]


@pytest.fixture
def az(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Iterator[Container]:
    """A fresh container and the ``azure_lake`` connection; yields it with adlfs's filesystem."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{AZ_CONN_ID.upper()}", azurite.connection_json)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    name = f"lake{uuid.uuid4().hex[:12]}"
    client = azurite.service().get_container_client(name)
    client.create_container()
    from airflow.sdk import ObjectStoragePath

    fs = ObjectStoragePath(f"abfs://{AZ_CONN_ID}@{name}/").fs
    fs.invalidate_cache()
    try:
        yield Container(name, fs, client)
    finally:
        fs.invalidate_cache()
        client.delete_container()
        client.close()
