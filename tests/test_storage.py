"""Atomic writes to local paths and object storage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_quamotion.storage import TEMP_MARKER, atomic_writer, uri_of


def test_success_moves_into_place(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.jsonl"
    with atomic_writer(target) as out:
        out.write(b"x\n")
        assert not target.exists()
    assert target.read_bytes() == b"x\n"
    assert os.listdir(target.parent) == ["b.jsonl"]


def test_failure_leaves_nothing_and_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "b.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_writer(target) as out:
        out.write(b"partial")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["b.csv"]


def test_a_rerun_removes_what_a_killed_writer_left(tmp_path: Path) -> None:
    target = tmp_path / "runs.jsonl"
    stale = tmp_path / f".runs.jsonl{TEMP_MARKER}deadbeef"
    stale.write_text("half")
    other = tmp_path / f".other.jsonl{TEMP_MARKER}cafe"
    other.write_text("not ours")
    with atomic_writer(str(target)) as out:
        out.write(b"{}\n")
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, "runs.jsonl"])


def test_object_storage_paths(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath(f"file://{tmp_path}/o/x.txt")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / f".x.txt{TEMP_MARKER}old").write_text("stale")
    with atomic_writer(target, "w") as out:
        out.write("hello")
    assert (tmp_path / "o" / "x.txt").read_text() == "hello"
    assert os.listdir(tmp_path / "o") == ["x.txt"]
    with pytest.raises(ValueError, match="boom"), atomic_writer(target, "w") as out:
        out.write("partial")
        raise ValueError("boom")
    assert (tmp_path / "o" / "x.txt").read_text() == "hello"
    assert os.listdir(tmp_path / "o") == ["x.txt"]
    assert uri_of(str(tmp_path / "o" / "x.txt")) == f"file://{tmp_path}/o/x.txt"


def test_lineage_is_the_stores_own_namespace_and_key(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_quamotion.storage import lineage_of

    assert lineage_of(str(tmp_path / "a" / ".." / "r.csv")) == ("file", str(tmp_path / "r.csv"))
    assert lineage_of(f"file://{tmp_path}/r.csv") == ("file", str(tmp_path / "r.csv"))
    assert lineage_of(ObjectStoragePath(f"file://{tmp_path}/r.csv")) == ("file", str(tmp_path / "r.csv"))
    # the connection id says how Airflow reaches the bucket; it is not part of the dataset
    assert lineage_of("s3://aws_default@lake/q/dt=2024-01-02/runs.jsonl") == (
        "s3://lake",
        "q/dt=2024-01-02/runs.jsonl",
    )
    assert lineage_of(ObjectStoragePath("s3://lake/q/runs.jsonl", conn_id="aws_default")) == (
        "s3://lake",
        "q/runs.jsonl",
    )
    # the printable URI keeps it, so a downstream ObjectStoragePath(uri) reaches the same store
    assert uri_of("s3://aws_default@lake/q/runs.jsonl") == "s3://aws_default@lake/q/runs.jsonl"


def test_local_object_storage_paths_are_written_as_local_files(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath(f"file://{tmp_path}/new/dir/x.bin")
    with atomic_writer(target) as out:
        assert out.name.startswith(str(tmp_path / "new" / "dir" / f".x.bin{TEMP_MARKER}"))
        out.write(b"x")
    assert (tmp_path / "new" / "dir" / "x.bin").read_bytes() == b"x"
