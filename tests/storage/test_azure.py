"""Azure Blob for real: Azurite (npm) through the microsoft-azure provider and adlfs.

Objects are reached as ``abfs://azure_lake@CONTAINER/KEY`` object storage paths (the provider registers
``abfs``/``abfss``/``adl`` with a ``wasb`` or ``adls`` connection). A blob becomes visible only when its
block list is committed: every file stages ``BLOCK_SIZE`` blocks (a small one, one block) and commits
their list when the write succeeds. A failure commits nothing; staged blocks of a blob that
no commit includes stay invisible and are dropped by the next commit of that blob (or by Azure after
a week).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionApiError
from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator
from airflow_provider_quamotion.storage import BLOCK_SIZE, atomic_writer, lineage_of
from tests.storage.conftest import AZ_CONN_ID, ROOT, Azurite, Container, export

KEY = "q/dt=2024-01-02/runs.jsonl"
BIG = 12 * 1024 * 1024  # more than two 5 MiB blocks


def commits(sent: list[tuple[str, str]]) -> list[str]:
    """The requests that make a blob visible: Put Blob and Put Block List."""
    return [t for m, t in sent if m == "PUT" and "comp=block&" not in t and "restype=container" not in t]


@pytest.mark.parametrize("style", ["connection_string", "account_key"])
def test_connection_set_up(
    azurite: Azurite, az: Container, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    """A ``wasb`` connection with a connection string, or with account name, key and endpoint host."""
    connection = azurite.connection_json if style == "connection_string" else azurite.account_connection_json
    monkeypatch.setenv(f"AIRFLOW_CONN_{AZ_CONN_ID.upper()}", connection)
    with atomic_writer(az.uri(KEY), "w") as out:
        out.write("héllo\n")
    assert az.read(KEY) == "héllo\n".encode()
    from airflow.sdk import ObjectStoragePath

    assert ObjectStoragePath(az.uri(KEY)).read_bytes() == "héllo\n".encode()


def test_small_file_is_one_block_and_its_commit(azurite: Azurite, az: Container) -> None:
    mark = azurite.mark()
    with atomic_writer(az.uri(KEY)) as out:
        out.write(b'{"a":1}\n')
    sent = azurite.since(mark)
    assert az.read(KEY) == b'{"a":1}\n'
    # Put Block + Put Block List (a commit drops blocks a killed writer staged; a Put Blob would not)
    assert [(m, t.split("&blockid=")[0]) for m, t in sent] == [
        ("PUT", f"/devstoreaccount1/{az.name}/{KEY}?comp=block"),
        ("PUT", f"/devstoreaccount1/{az.name}/{KEY}?comp=blocklist"),
    ], sent
    assert az.blobs() == [KEY]


def test_large_file_stages_blocks_and_commits_once(azurite: Azurite, az: Container) -> None:
    data = os.urandom(BIG + 123)
    mark = azurite.mark()
    with atomic_writer(az.uri(KEY)) as out:
        for start in range(0, len(data), 1 << 20):
            out.write(data[start : start + (1 << 20)])
            assert az.blobs() == []  # nothing visible before the block completes
    sent = azurite.since(mark)
    assert az.read(KEY) == data
    staged = [t for m, t in sent if m == "PUT" and "comp=block&" in t]
    assert len(staged) == 3  # 5 + 5 + 2 MiB: the buffer is bounded by BLOCK_SIZE
    assert BLOCK_SIZE == 5 * 1024 * 1024
    assert len(commits(sent)) == 1 and "comp=blocklist" in commits(sent)[0], sent
    assert not any(m == "DELETE" or "x-ms-copy" in t for m, t in sent), sent
    assert az.uncommitted_blocks(KEY) == []


@pytest.mark.parametrize("size", [100, BIG])
def test_a_failure_commits_nothing_and_keeps_the_previous_blob(
    azurite: Azurite, az: Container, size: int
) -> None:
    with atomic_writer(az.uri(KEY)) as out:
        out.write(b"old\n")
    mark = azurite.mark()
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(az.uri(KEY)) as out:
        out.write(os.urandom(size))
        raise RuntimeError("boom")
    sent = azurite.since(mark)
    assert commits(sent) == [], sent
    assert az.read(KEY) == b"old\n"
    assert az.blobs() == [KEY]


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from airflow_provider_quamotion.export.writers import write_file

    def records():
        for i in range(200_000):
            yield {"i": i, "pad": "x" * 100}
        print("written", flush=True)
        time.sleep(600)
        yield {"never": True}

    write_file(records(), sys.argv[1], "jsonl")
    """
)


def test_a_killed_writer_leaves_no_blob_and_a_rerun_leaves_exactly_the_blob(az: Container) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, az.uri(KEY)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert "written" in (line.strip() for line in iter(proc.stdout.readline, ""))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert az.blobs() == []  # > 20 MiB of blocks staged, none committed: no blob
    assert len(az.uncommitted_blocks(KEY)) >= 4
    from airflow_provider_quamotion.export.writers import write_file

    assert write_file([{"i": i} for i in range(3)], az.uri(KEY), "jsonl") == 3
    assert az.read(KEY) == b'{"i":0}\n{"i":1}\n{"i":2}\n'
    assert az.blobs() == [KEY]
    assert az.uncommitted_blocks(KEY) == []  # the commit dropped the killed writer's blocks


def test_lineage_is_the_containers_namespace_and_key(az: Container) -> None:
    assert lineage_of(az.uri(KEY)) == (f"abfs://{az.name}", KEY)


# Every operator that writes or reads storage.

pytestmark = pytest.mark.usefixtures("mocked_connection")


@pytest.fixture
def api_mock(m: Any, azurite: Azurite) -> Any:
    """The mocked Quamotion API, letting the Azure SDK's own requests through to Azurite (loopback)."""
    m.register_uri(rm.ANY, re.compile(re.escape(azurite.url) + "/"), real_http=True)
    return m


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("resource", ["test_runs", "jobs"])
def test_export_to_azure_is_byte_identical_to_a_local_export(
    api_mock: Any, azurite: Azurite, az: Container, tmp_path: Path, fmt: str, resource: str
) -> None:
    local = tmp_path / f"{resource}.{fmt}"
    export(resource, fmt, str(local))
    key = f"q/dt=2024-01-02/{resource}.{fmt}"
    mark = azurite.mark()
    summary = export(resource, fmt, az.uri(key))
    sent = azurite.since(mark)
    assert summary["rows"] > 0
    assert summary["destination"] == az.uri(key)
    assert az.read(key) == local.read_bytes()
    assert az.blobs() == [key]
    assert len(sent) == 2, sent  # Put Block + Put Block List


def test_a_failed_export_leaves_nothing_visible(api_mock: Any, azurite: Azurite, az: Container) -> None:
    api_mock.get(ROOT + api.test_run_jobs("r4"), status_code=404, text="gone")
    mark = azurite.mark()
    with pytest.raises(QuamotionApiError):
        QuamotionExportOperator(task_id="t", resource="jobs", destination=az.uri("q/jobs.jsonl")).execute({})
    assert azurite.since(mark) == []  # nothing sent at all: the rows were below one block
    assert az.blobs() == []


def test_api_operator_output_path_to_azure_matches_a_local_download(
    api_mock: Any, azurite: Azurite, az: Container, tmp_path: Path
) -> None:
    body = b"PK\x03\x04" + os.urandom(7 * 1024 * 1024)  # more than one 5 MiB block
    api_mock.get(ROOT + "job/5/artifacts", content=body, headers={"Content-Type": "application/zip"})
    local = tmp_path / "artifacts.zip"
    QuamotionApiOperator(task_id="t", endpoint="job/5/artifacts", output_path=str(local)).execute({})
    uri = az.uri("artifacts/job5.zip")
    mark = azurite.mark()
    assert QuamotionApiOperator(task_id="t", endpoint="job/5/artifacts", output_path=uri).execute({}) == uri
    sent = azurite.since(mark)
    assert len([t for method, t in sent if "comp=block&" in t]) == 2, sent  # two blocks: 5 MiB + 2 MiB
    assert len(commits(sent)) == 1, sent
    assert az.read("artifacts/job5.zip") == local.read_bytes() == body
    api_mock.get(ROOT + "job/6/artifacts", status_code=404, text="no such job")
    with pytest.raises(QuamotionApiError):
        QuamotionApiOperator(task_id="t", endpoint="job/6/artifacts", output_path=uri).execute({})
    assert az.read("artifacts/job5.zip") == body
    assert az.blobs() == ["artifacts/job5.zip"]


def test_upload_from_azure_reads_the_blob_once(api_mock: Any, azurite: Azurite, az: Container) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    data = os.urandom(300_000)
    az.client.upload_blob("apps/app.apk", data)
    sent_bodies: list[bytes] = []

    def reply(request: Any, context: Any) -> list[dict[str, Any]]:
        sent_bodies.append(request.body.read() if hasattr(request.body, "read") else request.body)
        return [{"id": "app1"}]

    api_mock.post(ROOT + api.APPLICATIONS, json=reply)
    mark = azurite.mark()
    hook = QuamotionHook("quamotion_default")
    try:
        item = hook.upload_application(ObjectStoragePath(az.uri("apps/app.apk")))
    finally:
        hook.close()
    sent = azurite.since(mark)
    assert item == {"id": "app1"}
    assert data in sent_bodies[0]
    metadata = [t for method, t in sent if method == "HEAD" or "comp=list" in t]
    assert len(metadata) <= 1, sent  # the source is stated once
