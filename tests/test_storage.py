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
