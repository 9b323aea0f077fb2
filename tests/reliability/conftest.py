"""Fixtures of the reliability tests: a larger sandbox for chaos and kill tests, clean process caches."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.mocks import reset_process_caches

#: ~7,000 records (2,000 runs + their jobs) for the chaos and kill tests.
CHAOS_RUNS = 2000


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Each test gets its own tokens, msal apps and project roots (a test may break credentials)."""
    reset_process_caches()
    yield
    reset_process_caches()


@pytest.fixture(scope="package")
def chaos_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of its own: faults set here never reach the session sandbox."""
    with Sandbox(tmp_path_factory.mktemp("chaos-sandbox"), runs=CHAOS_RUNS, seed=7) as sb:
        yield sb


@pytest.fixture
def chaos_conn(chaos_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The chaos sandbox as ``quamotion_default``, faults cleared before and after."""
    chaos_sandbox.clear_faults()
    chaos_sandbox.reset_counters()
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", chaos_sandbox.connection_json)
    yield chaos_sandbox
    chaos_sandbox.clear_faults()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a jsonl file."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def multiset(records: Iterable[Any]) -> Counter[str]:
    """Records as a multiset of canonical JSON (order of keys ignored)."""
    return Counter(json.dumps(r, sort_keys=True) for r in records)
