"""Operators that write or read object storage, against a real S3 endpoint (moto's server).

The Quamotion API is requests-mock; S3 is moto's HTTP server reached through an ``aws`` connection
(s3fs speaks aiohttp, which requests-mock does not touch).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionApiError
from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator
from tests.storage.conftest import CONN_ID, ROOT, MotoS3, export, objects, pending_uploads

pytestmark = pytest.mark.usefixtures("mocked_connection")


def _read(fs: Any, key: str) -> bytes:
    fs.invalidate_cache()
    return bytes(fs.cat_file(f"lake/{key}"))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
@pytest.mark.parametrize("resource", ["test_runs", "jobs"])
def test_export_to_s3_is_byte_identical_to_a_local_export(
    m: Any, s3: Any, moto_s3: MotoS3, tmp_path: Path, fmt: str, resource: str
) -> None:
    local = tmp_path / f"{resource}.{fmt}"
    export(resource, fmt, str(local))
    key = f"q/dt=2024-01-02/{resource}.{fmt}"
    mark = moto_s3.mark()
    summary = export(resource, fmt, f"s3://{CONN_ID}@lake/{key}")
    sent = moto_s3.since(mark)
    assert summary["rows"] > 0
    assert summary["destination"] == f"s3://{CONN_ID}@lake/{key}"
    assert _read(s3, key) == local.read_bytes()
    assert objects(s3) == [key]
    assert pending_uploads(s3) == []
    assert len(sent) <= 3, sent  # ListMultipartUploads + PUT


def test_export_lineage_output_is_the_stores_namespace_and_key(m: Any, s3: Any) -> None:
    from airflow_provider_quamotion.export.runner import run_export

    result = run_export(
        quamotion_conn_id="quamotion_default",
        resource="test_runs",
        destination=f"s3://{CONN_ID}@lake/q/runs.jsonl",
    )
    assert (result.target_namespace, result.target_name) == ("s3://lake", "q/runs.jsonl")


def test_a_failed_export_leaves_nothing_visible_and_no_pending_upload(
    m: Any, s3: Any, moto_s3: MotoS3
) -> None:
    key = "q/jobs.jsonl"
    m.get(ROOT + api.test_run_jobs("r4"), status_code=404, text="gone")
    mark = moto_s3.mark()
    with pytest.raises(QuamotionApiError):
        QuamotionExportOperator(
            task_id="t",
            resource="jobs",
            destination=f"s3://{CONN_ID}@lake/{key}",
        ).execute({})
    sent = moto_s3.since(mark)
    assert objects(s3) == []
    assert pending_uploads(s3) == []
    assert not any(method in ("PUT", "DELETE") for method, _ in sent), sent


def test_api_operator_output_path_to_s3_matches_a_local_download(
    m: Any, s3: Any, moto_s3: MotoS3, tmp_path: Path
) -> None:
    body = b"PK\x03\x04" + os.urandom(7 * 1024 * 1024)  # more than one 5 MiB part
    m.get(ROOT + "job/5/artifacts", content=body, headers={"Content-Type": "application/zip"})
    local = tmp_path / "artifacts.zip"
    QuamotionApiOperator(task_id="t", endpoint="job/5/artifacts", output_path=str(local)).execute({})
    uri = f"s3://{CONN_ID}@lake/artifacts/job5.zip"
    mark = moto_s3.mark()
    assert QuamotionApiOperator(task_id="t", endpoint="job/5/artifacts", output_path=uri).execute({}) == uri
    sent = moto_s3.since(mark)
    # written in place: no temporary object copied and deleted
    assert not any(method == "DELETE" or "delete" in target for method, target in sent), sent
    assert len([t for method, t in sent if method == "PUT"]) == 2, sent  # two parts: 5 MiB + 2 MiB
    assert _read(s3, "artifacts/job5.zip") == local.read_bytes() == body
    assert pending_uploads(s3) == []
    # a failed call leaves the object as it was
    m.get(ROOT + "job/6/artifacts", status_code=404, text="no such job")
    with pytest.raises(QuamotionApiError):
        QuamotionApiOperator(task_id="t", endpoint="job/6/artifacts", output_path=uri).execute({})
    assert _read(s3, "artifacts/job5.zip") == body
    assert objects(s3) == ["artifacts/job5.zip"]
    assert pending_uploads(s3) == []


def test_upload_from_s3_stats_the_source_once(m: Any, s3: Any, moto_s3: MotoS3) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    data = os.urandom(300_000)
    s3.pipe_file("lake/apps/app.apk", data)
    s3.invalidate_cache()
    sent_bodies: list[bytes] = []

    def reply(request: Any, context: Any) -> list[dict[str, Any]]:
        sent_bodies.append(request.body.read() if hasattr(request.body, "read") else request.body)
        return [{"id": "app1"}]

    m.post(ROOT + api.APPLICATIONS, json=reply)
    mark = moto_s3.mark()
    hook = QuamotionHook("quamotion_default")
    try:
        item = hook.upload_application(ObjectStoragePath(f"s3://{CONN_ID}@lake/apps/app.apk"))
    finally:
        hook.close()
    sent = moto_s3.since(mark)
    assert item == {"id": "app1"}
    assert data in sent_bodies[0]
    assert [method for method, _ in sent if method == "HEAD"] == ["HEAD"], sent
