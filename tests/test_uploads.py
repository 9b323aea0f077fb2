"""Streamed multipart bodies."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.uploads import MultipartFile


def test_body_is_multipart_with_the_right_length_and_rewinds(tmp_path: Path) -> None:
    path = tmp_path / 'we"ird.ipa'
    path.write_bytes(b"A" * 70_000)
    with MultipartFile.open(path, field="files") as body:
        whole = b"".join(iter(lambda: body.read(8192), b""))
        assert len(whole) == len(body)
        boundary = body.content_type.split("boundary=")[1].encode()
        assert whole.startswith(b"--" + boundary + b"\r\n")
        assert b'name="files"; filename="we%22ird.ipa"' in whole
        assert whole.endswith(b"\r\n--" + boundary + b"--\r\n")
        assert whole.count(b"A") == 70_000
        body.seek(0)
        assert body.read() == whole
        with pytest.raises(ValueError, match="seek to 0"):
            body.seek(5)


def test_a_file_that_shrinks_while_uploading_is_an_error() -> None:
    body = MultipartFile(io.BytesIO(b"abc"), size=10, filename="x.apk", field="files")
    with pytest.raises(QuamotionConfigError, match="changed size"):
        body.read()
