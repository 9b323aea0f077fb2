"""2,000 test-run triggers in one event loop against the sandbox: a regression guard on correctness.

Every trigger ends with its run's real outcome (none times out or errors), the whole loop asks for one
token and looks the project up once, and every run is polled (the first polls are spread over the
poll interval, never dropped). Speed and loop lag are measured in ``make bench``
(``trigger_10k_*``), never asserted here.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger
from tests import sandbox_helpers
from tests.mocks import reset_process_caches

pytestmark = pytest.mark.integration

TRIGGERS = 2000
POLL_INTERVAL = 0.5


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox of this module's own: the 2,000 runs created here must not show in others' lists."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``own_sandbox`` as ``quamotion_default``."""
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


def start_runs(count: int) -> list[str]:
    """Start ``count`` test runs (8 at a time, one hook); every third one ends failed."""
    hook = QuamotionHook()
    app = hook.list_applications()[0]
    package = hook.list_test_packages()[0]
    group = hook.list_device_groups()[0]

    def start(k: int) -> str:
        parameters = "fail" if k % 3 == 0 else ""
        run = hook.start_test_run(app, package, group["deviceGroupId"], parameters=parameters)
        return str(run["testRunId"])

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(start, range(count)))
    finally:
        hook.close()


async def test_2000_triggers_all_finish_with_one_token(sandbox_conn: Sandbox) -> None:
    ids = start_runs(TRIGGERS)
    reset_process_caches()  # the triggers' loop starts cold: no token, no project root cached
    sandbox_conn.reset_counters()

    async def wait(test_run_id: str) -> str:
        trigger = QuamotionTestRunTrigger(
            test_run_id, poll_interval=POLL_INTERVAL, deadline=time.time() + 300
        )
        async for event in trigger.run():
            assert event.payload["test_run_id"] == test_run_id
            return str(event.payload["status"])
        return "no event"

    statuses = await asyncio.gather(*(wait(i) for i in ids))

    failing = sum(1 for k in range(TRIGGERS) if k % 3 == 0)
    assert Counter(statuses) == {"failed": failing, "success": TRIGGERS - failing}
    counters = sandbox_conn.counters()
    assert counters["tokens_issued"] + counters["logins"] == 1
    assert counters["by_path"].get("/api/project", 0) == 1
    polled = {path.split("/")[-2] for path in counters["by_path"] if path.endswith("/jobs")}
    assert polled == set(ids)
    assert set(counters["status"]) == {"200"}
