"""atomic_writer against a real S3 endpoint (moto's server) through an Airflow ``aws`` connection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from airflow_provider_quamotion.storage import BLOCK_SIZE, atomic_writer, lineage_of, uri_of
from tests.storage.conftest import CONN_ID, MotoS3, objects, pending_uploads

URI = f"s3://{CONN_ID}@lake/q/dt=2024-01-02/runs.jsonl"
KEY = "q/dt=2024-01-02/runs.jsonl"
BIG = 12 * 1024 * 1024  # more than two 5 MiB parts


def _read(fs: Any, key: str) -> bytes:
    fs.invalidate_cache()
    return bytes(fs.cat_file(f"lake/{key}"))


def test_small_file_is_one_put_and_at_most_three_requests(s3: Any, moto_s3: MotoS3) -> None:
    mark = moto_s3.mark()
    with atomic_writer(URI) as out:
        out.write(b'{"a":1}\n')
    sent = moto_s3.since(mark)
    assert _read(s3, KEY) == b'{"a":1}\n'
    assert len(sent) <= 3, sent
    assert [m for m, t in sent if m == "PUT"] == ["PUT"]  # one PUT of the object itself, no temporary
    assert not any(m in ("DELETE",) or "x-amz-copy-source" in t for m, t in sent), sent
    assert objects(s3) == [KEY]


def test_text_mode(s3: Any) -> None:
    with atomic_writer(URI, "w") as out:
        out.write("héllo\n")
    assert _read(s3, KEY) == "héllo\n".encode()


@pytest.mark.parametrize("size", [100, BIG])
def test_a_failure_uploads_nothing_and_keeps_the_previous_object(s3: Any, moto_s3: MotoS3, size: int) -> None:
    with atomic_writer(URI) as out:
        out.write(b"old\n")
    mark = moto_s3.mark()
    with pytest.raises(RuntimeError, match="boom"), atomic_writer(URI) as out:
        out.write(os.urandom(size))
        raise RuntimeError("boom")
    sent = moto_s3.since(mark)
    assert _read(s3, KEY) == b"old\n"
    assert objects(s3) == [KEY]
    assert pending_uploads(s3) == []
    # no object PUT then deleted, no multipart upload completed
    assert not any(m == "PUT" and "partNumber" not in t for m, t in sent), sent
    assert not any(m == "DELETE" and "uploadId" not in t for m, t in sent), sent
    assert not any(m == "POST" and "uploadId=" in t for m, t in sent), sent


def test_large_file_streams_in_parts_without_a_copy(s3: Any, moto_s3: MotoS3) -> None:
    data = os.urandom(BIG + 123)
    mark = moto_s3.mark()
    with atomic_writer(URI) as out:
        for start in range(0, len(data), 1 << 20):
            out.write(data[start : start + (1 << 20)])
            assert objects(s3) == []  # nothing visible before the block completes
    sent = moto_s3.since(mark)
    assert _read(s3, KEY) == data
    parts = [t for m, t in sent if m == "PUT" and "partNumber=" in t]
    assert len(parts) == 3  # 5 + 5 + 2 MiB: the buffer is bounded by BLOCK_SIZE
    assert BLOCK_SIZE == 5 * 1024 * 1024
    assert not any(m == "DELETE" for m, _ in sent), sent
    assert pending_uploads(s3) == []


def test_parquet_through_the_stream(s3: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": [1, 2, 3]})
    with atomic_writer(URI) as out:
        pq.write_table(table, out)
    s3.invalidate_cache()
    with s3.open(f"lake/{KEY}", "rb") as f:
        assert pq.read_table(f).equals(table)


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
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


def test_a_killed_writer_then_a_rerun_leave_exactly_the_object(s3: Any, moto_s3: MotoS3) -> None:
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, URI], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        assert "written" in (line.strip() for line in lines)  # > 20 MiB sent as parts, not committed
        deadline = time.monotonic() + 30
        while not pending_uploads(s3) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(pending_uploads(s3)) == 1  # the killed writer's parts: stored, billed, invisible
    assert objects(s3) == []
    from airflow_provider_quamotion.export.writers import write_file

    records = [{"i": i} for i in range(3)]
    assert write_file(records, URI, "jsonl") == 3
    assert _read(s3, KEY) == b'{"i":0}\n{"i":1}\n{"i":2}\n'
    assert objects(s3) == [KEY]
    assert pending_uploads(s3) == []


def test_only_the_destination_keys_uploads_are_aborted(s3: Any) -> None:
    other = s3.call_s3("create_multipart_upload", Bucket="lake", Key=KEY + ".other")
    mine = s3.call_s3("create_multipart_upload", Bucket="lake", Key=KEY)
    with atomic_writer(URI) as out:
        out.write(b"x")
    left = [(u["Key"], u["UploadId"]) for u in pending_uploads(s3)]
    assert left == [(KEY + ".other", other["UploadId"])]
    assert mine["UploadId"] not in {u for _, u in left}


def test_lineage_uses_the_stores_namespace_and_key(s3: Any) -> None:
    from airflow.sdk import ObjectStoragePath

    assert lineage_of(URI) == ("s3://lake", KEY)
    assert lineage_of(ObjectStoragePath(URI)) == ("s3://lake", KEY)
    assert lineage_of("/tmp/x/../y.csv") == ("file", "/tmp/y.csv")
    assert uri_of(URI) == URI  # the printable URI keeps the connection that reaches the store
