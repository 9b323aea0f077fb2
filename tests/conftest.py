"""Shared fixtures: a running Quamotion sandbox (a local emulator of Quamotion Cloud and Azure AD)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_quamotion.sandbox import Sandbox

SANDBOX_RUNS = 300
SANDBOX_SEED = 0


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One sandbox server (a subprocess) for the whole session: small data, fast test-run lifecycle."""
    with Sandbox(
        tmp_path_factory.mktemp("sandbox"),
        runs=SANDBOX_RUNS,
        seed=SANDBOX_SEED,
        queue_seconds=0.5,
        run_seconds=1.0,
    ) as sb:
        yield sb


@pytest.fixture
def sandbox_faultfree(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The session sandbox with no faults and zeroed counters, restored so after the test."""
    sandbox.clear_faults()
    sandbox.reset_counters()
    yield sandbox
    sandbox.clear_faults()
    sandbox.reset_counters()


@pytest.fixture
def sandbox_conn(sandbox_faultfree: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """The sandbox as Airflow's ``quamotion_default`` connection (``AIRFLOW_CONN_QUAMOTION_DEFAULT``)."""
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", sandbox_faultfree.connection_json)
    return sandbox_faultfree


@pytest.fixture
def mocked_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """For requests-mock unit tests: fresh process caches and a ``quamotion_default`` connection."""
    from tests.mocks import connection_json, reset_process_caches

    reset_process_caches()
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the transport's retry waits instead of sleeping."""
    recorded: list[float] = []
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", recorded.append)
    return recorded
