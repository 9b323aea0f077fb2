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


def _open_in_thread(path: str) -> BaseException | None:
    """``MultipartFile.open(path)`` in a thread (an open of a FIFO could wait forever); what it raised."""
    import os
    import threading

    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            MultipartFile.open(path, field="files").close()
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():  # blocked in open(): give it a writer so the thread ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        return AssertionError(f"opening {path} blocked")
    return outcome[0]


def test_a_directory_fifo_or_device_is_a_config_error_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    fifo = tmp_path / "app.ipa"
    os.mkfifo(fifo)
    cases = {
        str(tmp_path): "a directory",
        str(fifo): "a FIFO",
        "/dev/zero": "a device",
        "/dev/null": "a device",
    }
    for path, kind in cases.items():
        err = _open_in_thread(path)
        assert isinstance(err, QuamotionConfigError), (path, err)
        assert kind in str(err) and "not a regular file" in str(err)
    # through the hook: the error comes before any request (nothing listens on this port)
    conn = {"conn_type": "quamotion", "host": "http://127.0.0.1:9", "extra": {"api_key": "k"}}
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(conn))
    with pytest.raises(QuamotionConfigError, match="a directory"):
        QuamotionHook().upload_application(tmp_path)
    with pytest.raises(QuamotionConfigError, match="a device"):
        QuamotionHook().upload_test_package("/dev/zero")
