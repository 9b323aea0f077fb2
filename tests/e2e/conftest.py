"""End-to-end helpers: ``airflow api-server`` and Chromium, on an Airflow home of the shared harness.

The Airflow home and the real ``airflow`` CLI come from :mod:`tests.dag_runs` (the one harness: a
migrated SQLite database copied per home, an environment built from scratch so the developer's own
``AIRFLOW_HOME``, ``AIRFLOW__*`` settings and connections never leak in). The sandbox comes from
``tests/conftest.py`` (one per session).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from tests.dag_runs import (
    REPO,
    AirflowHome,
    ApiServer,
    make_airflow_home,
    start_api_server,
    stop_process,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

    from airflow_provider_quamotion.sandbox import Sandbox

ARTIFACTS = REPO / "test-artifacts"

#: Debian's Chromium (``scripts/system-deps.sh chromium``); ``QUAMOTION_E2E_CHROMIUM`` overrides it.
CHROMIUM = os.environ.get("QUAMOTION_E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


#: What the e2e tests add to the shared harness's settings: the UI's "Test" button, and every
#: SimpleAuthManager user an admin (no login page in the browser tests).
E2E_SETTINGS = {
    "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
}


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> AirflowHome:
    """One Airflow home (SQLite, the shared harness) for the e2e session; DAGs in its ``dags/``."""
    return make_airflow_home(tmp_path_factory.mktemp("airflow-home"), env=E2E_SETTINGS)


@pytest.fixture(scope="session")
def api_server(airflow_home: AirflowHome) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port for the session; its log goes to test-artifacts/."""
    server = start_api_server(airflow_home, ARTIFACTS / "ui" / "api-server.log")
    try:
        yield server
    finally:
        stop_process(server.process)


def sandbox_connection(sandbox: Sandbox, **changes: Any) -> dict[str, Any]:
    """The sandbox's connection dict (a copy), with top-level fields changed."""
    conn: dict[str, Any] = json.loads(sandbox.connection_json)
    conn.update(changes)
    return conn


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium. Missing means the set-up is incomplete: fail, never skip."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install it with `make system-deps` "
            "(scripts/system-deps.sh chromium) or set QUAMOTION_E2E_CHROMIUM."
        )
    return CHROMIUM


@pytest.fixture
def browser(chromium_path: str) -> Iterator[BrowserContext]:
    """A headless Chromium context (fresh profile) driven by Playwright; closed after the test."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="quamotion-e2e-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile,
                executable_path=chromium_path,
                args=list(CHROMIUM_ARGS),
                headless=True,
                viewport={"width": 1280, "height": 1500},
            )
            context.set_default_timeout(30_000)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser: BrowserContext, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page; on failure its screenshot goes to test-artifacts/ui/FAILED-<test>.png."""
    page = browser.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / "ui" / f"FAILED-{request.node.name}.png"), full_page=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
