"""Helpers shared by the sensor, trigger, operator and link tests that run against the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox

FAST_RETRY = {"max_attempts": 4, "backoff_initial": 0.01, "backoff_max": 0.02, "retry_after_max": 0.05}


def start_run(parameters: str = "", **hook_settings: Any) -> str:
    """Start a test run in the sandbox (``"fail"`` in the parameters makes it end failed); its id."""
    hook = QuamotionHook(**hook_settings)
    app = hook.list_applications()[0]
    package = hook.list_test_packages()[0]
    group = hook.list_device_groups()[0]
    run = hook.start_test_run(app, package, group["deviceGroupId"], parameters=parameters)
    return str(run["testRunId"])


def created_runs(counters: dict[str, Any]) -> int:
    """How many calls of ``testRun`` the sandbox served: the POSTs, as these tests never list runs."""
    return int(counters.get("by_path", {}).get("/project/sandbox/api/testRun", 0))


def private_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of a test module's own (for a module-scoped fixture): these tests create runs and
    uploads, which the session sandbox's other users (who count its runs) must not see."""
    with Sandbox(
        tmp_path_factory.mktemp("own-sandbox"), runs=20, seed=0, queue_seconds=0.5, run_seconds=1.0
    ) as sb:
        yield sb


def private_conn(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``sb`` as ``quamotion_default``, without faults and with zeroed counters (for a fixture)."""
    sb.clear_faults()
    sb.reset_counters()
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", sb.connection_json)
    yield sb
    sb.clear_faults()
