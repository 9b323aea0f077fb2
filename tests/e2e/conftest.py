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
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.dag_runs import AIRFLOW, REPO, AirflowHome, make_airflow_home

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
API_SERVER_STARTUP_TIMEOUT = 90.0


#: What the e2e tests add to the shared harness's settings: the UI's "Test" button, and every
#: SimpleAuthManager user an admin (no login page in the browser tests).
E2E_SETTINGS = {
    "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    """A running ``airflow api-server`` on loopback."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, size: int = 6000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API (SimpleAuthManager with all admins: no token needed); the reply's JSON."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            payload = reply.read()
        return json.loads(payload) if payload else None

    def get_json(self, path: str) -> Any:
        """GET ``path`` of the REST API."""
        return self.call("GET", path)

    def delete_connection(self, conn_id: str) -> None:
        """Delete connection ``conn_id`` if it exists."""
        try:
            self.call("DELETE", f"/api/v2/connections/{conn_id}")
        except urllib.error.HTTPError as err:
            if err.code != 404:
                raise

    def put_connection(self, conn_id: str, conn: Mapping[str, Any]) -> None:
        """Create connection ``conn_id`` (replacing one of that id) from its ``AIRFLOW_CONN_*`` JSON form."""
        self.delete_connection(conn_id)
        extra = conn.get("extra")
        body = {
            "connection_id": conn_id,
            "conn_type": conn["conn_type"],
            "host": conn.get("host"),
            "port": conn.get("port"),
            "login": conn.get("login"),
            "password": conn.get("password"),
            "extra": json.dumps(extra) if isinstance(extra, Mapping) else extra,
        }
        self.call("POST", "/api/v2/connections", body)


def _stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop a process we started in its own session, and its children, by its id."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def start_api_server(home: AirflowHome, log_path: Path) -> ApiServer:
    """Start ``airflow api-server`` on a free 127.0.0.1 port and wait until it answers its health check."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=home.environ(),
            cwd=home.path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ApiServer(url=url, process=process, log_path=log_path)
    deadline = time.monotonic() + API_SERVER_STARTUP_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"airflow api-server exited {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url + "/api/v2/monitor/health", timeout=5) as reply:
                if reply.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            _stop(process)
            pytest.fail(
                f"airflow api-server did not answer within {API_SERVER_STARTUP_TIMEOUT:.0f}s:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.3)


def assert_no_secret(text: str, secrets: Sequence[str]) -> None:
    """Fail when any of ``secrets`` appears in ``text`` (without printing the secret)."""
    for i, secret in enumerate(secrets):
        assert secret, "an empty secret proves nothing"
        assert secret not in text, f"secret #{i} appears in the output"


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
        _stop(server.process)


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
