"""The Python API: :class:`Sandbox` starts a sandbox server (a subprocess or a thread), talks to its
admin API, stops it, and computes the records it serves."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion.sandbox.data import DataSettings, Record, SandboxData, parse_time
from airflow_provider_quamotion.sandbox.faults import FaultConfig, FaultRule
from airflow_provider_quamotion.sandbox.options import DEFAULT_TOKEN_LIFETIME, ServerOptions
from airflow_provider_quamotion.sandbox.state import CONNECTION_FILE, LOG_FILE

if TYPE_CHECKING:
    from airflow_provider_quamotion.sandbox.runtime import SandboxServer

ADMIN = "/_sandbox/"


# --- the Python API ----------------------------------------------------------------------------------


class Sandbox:
    """A running sandbox, as a context manager: ``with Sandbox(tmp_path) as sb: ...``.

    By default the server runs in a subprocess (the ``quamotion-sandbox serve`` CLI) so client
    benchmarks do not share a GIL with it; ``in_process=True`` runs it in a thread instead.

    :param state_dir: the state dir (certificates, credentials, ``connection.json``); a temporary
        directory, removed on stop, when ``None``.
    :param runs: how many historical test runs to generate.
    :param seed: the seed of the generated data and of random faults.
    :param days: how many days before ``anchor`` the runs spread over.
    :param projects: how many projects the account sees.
    :param anchor: when the history ends (datetime, ISO string or POSIX seconds); now by default.
    :param faults: faults to set once started (a :class:`FaultConfig`, its dict form, or a list of rules).
    :param queue_seconds: how long a created test run stays queued.
    :param run_seconds: how long a created test run's jobs run.
    :param token_lifetime: default lifetime in seconds of issued tokens.
    :param in_process: run uvicorn in a thread of this process.
    :param port: the port; 0 picks a free one.
    :param startup_timeout: seconds to wait for the server to answer.
    """

    def __init__(
        self,
        state_dir: str | Path | None = None,
        *,
        runs: int = 300,
        seed: int = 0,
        days: float = 30.0,
        projects: int = 1,
        anchor: float | str | dt.datetime | None = None,
        faults: FaultConfig | dict[str, Any] | list[FaultRule] | None = None,
        queue_seconds: float = 1.0,
        run_seconds: float = 2.0,
        token_lifetime: int = DEFAULT_TOKEN_LIFETIME,
        in_process: bool = False,
        port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self._own_dir = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="quamotion-sandbox-")).resolve()
        anchor_ts = float(int(time.time())) if anchor is None else parse_time(anchor)
        self.settings = DataSettings(seed=seed, runs=runs, days=days, anchor=anchor_ts, projects=projects)
        self.options = ServerOptions(
            data=self.settings,
            queue_seconds=queue_seconds,
            run_seconds=run_seconds,
            token_lifetime=token_lifetime,
        )
        self._faults = faults
        self.in_process = in_process
        self.port = port
        self.startup_timeout = startup_timeout
        self.connection: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._server: SandboxServer | None = None
        self._thread: threading.Thread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ssl: ssl.SSLContext | None = None
        self._data: SandboxData | None = None

    # --- lifecycle ---

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Sandbox:
        """Start the server and wait until it answers; returns ``self``."""
        if self.connection:
            raise RuntimeError("this sandbox is already running")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / CONNECTION_FILE).unlink(missing_ok=True)
        try:
            if self.in_process:
                self._start_thread()
            else:
                self._start_process()
            self._ssl = ssl.create_default_context(cafile=self.connection["extra"]["verify"])
            self._wait_answering()
            if self._faults is not None:
                self.set_faults(self._faults)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_thread(self) -> None:
        from airflow_provider_quamotion.sandbox.runtime import SandboxServer

        server = SandboxServer(self.state_dir, self.options, port=self.port)
        ready = threading.Event()
        self._server = server
        self._thread = threading.Thread(
            target=server.run,
            kwargs={"on_ready": lambda _s: ready.set()},
            name="quamotion-sandbox",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(self.startup_timeout):
            raise RuntimeError("the in-process sandbox did not start in time")
        self.connection = server.connection

    def _start_process(self) -> None:
        s, o = self.settings, self.options
        cmd = [
            sys.executable,
            "-m",
            "airflow_provider_quamotion.sandbox",
            "serve",
            "--state-dir",
            str(self.state_dir),
            "--port",
            str(self.port),
            "--runs",
            str(s.runs),
            "--seed",
            str(s.seed),
            "--days",
            str(s.days),
            "--projects",
            str(s.projects),
            "--anchor",
            str(s.anchor),
            "--queue-seconds",
            str(o.queue_seconds),
            "--run-seconds",
            str(o.run_seconds),
            "--token-lifetime",
            str(o.token_lifetime),
            "--exit-with-parent",
            "--quiet",
        ]
        log = open(self.state_dir / LOG_FILE, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            log.close()
        self._finalizer = weakref.finalize(self, _terminate, self._process, 5.0)
        path = self.state_dir / CONNECTION_FILE
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"the sandbox exited with code {self._process.returncode}:\n{self._log_tail()}"
                )
            if path.exists():
                self.connection = json.loads(path.read_text())
                return
            time.sleep(0.02)
        raise RuntimeError(
            f"the sandbox did not write {path} within {self.startup_timeout}s:\n{self._log_tail()}"
        )

    def _log_tail(self, size: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return (self.state_dir / LOG_FILE).read_text(errors="replace")[-size:]
        return ""

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                self.info()
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after a timeout) and wait for it; idempotent."""
        if self._process is not None:
            _terminate(self._process, 10.0)
            if self._finalizer is not None:
                self._finalizer.detach()
            self._process = None
        if self._server is not None:
            self._server.stop()
            if self._thread is not None:
                self._thread.join(15)
            self._server, self._thread = None, None
        self.connection = {}
        if self._own_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    @property
    def pid(self) -> int:
        """The server's process id (this process's when ``in_process``)."""
        return self._process.pid if self._process is not None else os.getpid()

    # --- connection ---

    @property
    def connection_json(self) -> str:
        """The connection as JSON, the value for ``AIRFLOW_CONN_QUAMOTION_DEFAULT``."""
        return json.dumps(self.connection)

    @property
    def api_url(self) -> str:
        """The API origin, e.g. ``https://127.0.0.1:PORT``."""
        return str(self.connection["host"])

    @property
    def authority_host(self) -> str:
        """The Azure AD origin, e.g. ``https://localhost:PORT``."""
        return str(self.connection["extra"]["authority_host"])

    @property
    def ca_path(self) -> str:
        """The CA certificate that verifies both origins."""
        return str(self.connection["extra"]["verify"])

    @property
    def client_id(self) -> str:
        """The Azure AD client id."""
        return str(self.connection["login"])

    @property
    def client_secret(self) -> str:
        """The Azure AD client secret."""
        return str(self.connection["password"])

    @property
    def tenant_id(self) -> str:
        """The Azure AD tenant id."""
        return str(self.connection["extra"]["tenant_id"])

    @property
    def api_key(self) -> str:
        """The key ``POST /api/login`` accepts."""
        return str(self.connection["extra"]["api_key"])

    @property
    def project_url(self) -> str:
        """The API root of the first project, e.g. ``https://127.0.0.1:PORT/project/sandbox/api/``."""
        return f"{self.api_url}{self.data.projects[0]['relativeUrl']}api/"

    # --- admin API ---

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - an https URL we built
            f"{self.api_url}{ADMIN}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self._ssl)
        )
        with opener.open(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def info(self) -> dict[str, Any]:
        """The server's settings as it reports them (``GET /_sandbox/info``)."""
        return dict(self._admin("GET", "info"))

    def set_faults(
        self, faults: FaultConfig | dict[str, Any] | list[FaultRule] | None = None, **rule: Any
    ) -> dict[str, Any]:
        """Replace the fault configuration; ``set_faults(status=503, rate=0.5)`` sets a single rule.

        :param faults: the configuration, its dict form, or a list of rules.
        :param rule: fields of a single :class:`FaultRule` (when ``faults`` is not given).
        """
        if faults is None:
            faults = FaultConfig([FaultRule(**rule)])
        elif isinstance(faults, list):
            faults = FaultConfig(faults)
        body = faults.to_dict() if isinstance(faults, FaultConfig) else faults
        return dict(self._admin("POST", "faults", body))

    def clear_faults(self) -> None:
        """Remove every fault rule and restore the default token lifetime."""
        self._admin("DELETE", "faults")

    def revoke_tokens(self) -> None:
        """Revoke every token issued so far (the API then answers 401 to them)."""
        self._admin("POST", "revoke")

    @contextlib.contextmanager
    def revoking_tokens(self, every: float) -> Iterator[list[int]]:
        """Revoke every issued token every ``every`` seconds while the block runs (chaos tests).

        Yields a one-item list holding how many revocations happened so far.

        :param every: seconds between revocations.
        """
        stop = threading.Event()
        count = [0]

        def loop() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):  # the server may be stopping
                    self.revoke_tokens()
                    count[0] += 1

        thread = threading.Thread(target=loop, name="sandbox-revoker", daemon=True)
        thread.start()
        try:
            yield count
        finally:
            stop.set()
            thread.join()

    def counters(self) -> dict[str, Any]:
        """Request counters: ``requests``, ``by_path``, ``status``, ``tokens_issued``, ``logins``..."""
        return dict(self._admin("GET", "counters"))

    def reset_counters(self) -> None:
        """Zero the request counters."""
        self._admin("POST", "counters/reset")

    # --- expected records ---

    @property
    def data(self) -> SandboxData:
        """The generated data, computed locally (same settings as the server)."""
        if self._data is None:
            self._data = SandboxData(self.settings)
        return self._data

    def expected_test_runs(
        self, since: float | str | dt.datetime | None = None, until: float | str | dt.datetime | None = None
    ) -> Iterator[Record]:
        """The generated test runs scheduled in ``[since, until)``, exactly as the API serves them.

        Newest first, as the real list (and the API after the runs created through it, which are
        not included here).

        :param since: the window's inclusive start (``None``: from the first run).
        :param until: the window's exclusive end (``None``: to the last run).
        """
        return self.data.iter_runs(self._window(since, until))

    def expected_jobs(
        self,
        since: float | str | dt.datetime | None = None,
        until: float | str | dt.datetime | None = None,
        *,
        run_id_key: str | None = None,
    ) -> Iterator[Record]:
        """The jobs of :meth:`expected_test_runs`, in their order, exactly as the API serves them.

        :param since: the window's inclusive start.
        :param until: the window's exclusive end.
        :param run_id_key: when set, each job also carries its run's id under this key.
        """
        for run, job in self.data.iter_jobs(self._window(since, until)):
            yield {**job, run_id_key: run["testRunId"]} if run_id_key else job

    def _window(
        self, since: float | str | dt.datetime | None, until: float | str | dt.datetime | None
    ) -> range:
        """The window's run indexes, newest first (the order the API lists runs in)."""
        window = self.data.index_range(
            None if since is None else parse_time(since), None if until is None else parse_time(until)
        )
        return window[::-1]


def _terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, wait, then SIGKILL: never leave the server behind."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
