"""The one Airflow test harness: throw-away Airflow homes and the real ``airflow`` CLI in subprocesses.

* :func:`migrated_template` migrates a SQLite metadata database once per process (pytest session).
* :func:`make_airflow_home` makes a home from a copy of that database: homes are independent (a DAG run
  in one never shows in another), cheap (no migration each), and can be used in parallel.
* :class:`AirflowHome` runs ``airflow ...`` in a home (``run``, ``dags_test``).
* :class:`DagRun` runs ``airflow dags test`` in a home of its own in the background (``start`` then
  ``wait``), then reads its outcome from the database (``task_states``, ``xcom``).

The environment of every subprocess is built here from scratch for Airflow's settings, so the
developer's ``AIRFLOW_HOME``, ``AIRFLOW__*`` settings, ``AIRFLOW_CONN_*`` connections and
``AIRFLOW_VAR_*`` variables never leak in; what a test needs it passes as ``env``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
SENSOR_DAGS = REPO / "tests" / "sensors" / "dags"
EXPORT_DAGS = REPO / "tests" / "export" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"
LOGICAL_DATE = "2024-01-01"
#: The tasks of each example DAG (``example_dags/``).
DAILY_EXPORT_TASKS = frozenset(
    {"test_runs_to_storage", "jobs_to_storage", "test_runs_to_warehouse", "jobs_to_warehouse"}
)
NIGHTLY_TASKS = frozenset(
    {
        "upload_app",
        "upload_test_package",
        "start_test_run",
        "wait_for_test_run",
        "save_logs_and_artifacts",
        "export_run_jobs",
    }
)
API_AND_SENSOR_TASKS = frozenset(
    {"get_version", "android_device_groups", "all_test_runs_to_storage", "wait_for_android_app"}
)
CLI_TIMEOUT = 180.0
DB_FILE = "airflow.db"

_TEMPLATE: Path | None = None


def clean_environ() -> dict[str, str]:
    """This process's environment without any Airflow setting, connection or variable."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_")) and k != "AIRFLOW_HOME"
    }


def airflow_env(home: Path, dags_folder: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of an ``airflow`` subprocess on ``home`` (SQLite) reading DAGs from ``dags_folder``."""
    env = clean_environ()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / DB_FILE}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            # Long fixed keys: no "HMAC key is too short" warnings, no key written to the home.
            "AIRFLOW__API_AUTH__JWT_SECRET": "tests-" + "k" * 60,
            "AIRFLOW__API__SECRET_KEY": "tests-" + "s" * 60,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def migrated_template() -> Path:
    """An Airflow home with a migrated database, made once per process."""
    global _TEMPLATE
    if _TEMPLATE is None:
        home = Path(tempfile.mkdtemp(prefix="quamotion-airflow-template-"))
        out = subprocess.run(
            [AIRFLOW, "db", "migrate"],
            env=airflow_env(home, home / "dags"),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"airflow db migrate exited {out.returncode}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
            )
        _TEMPLATE = home
    return _TEMPLATE


@dataclass
class AirflowHome:
    """An Airflow home on SQLite (a copy of the migrated template), and how to run the CLI in it.

    :param path: the home.
    :param dags_folder: where its DAGs are read from.
    :param env: the environment of its subprocesses (see :func:`airflow_env`).
    """

    path: Path
    dags_folder: Path
    env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def db(self) -> Path:
        """The metadata database."""
        return self.path / DB_FILE

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The subprocess environment: this home's settings plus ``extra``."""
        env = dict(self.env)
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` and return the finished process (output captured as text).

        :param env: extra environment variables (``AIRFLOW_CONN_...``).
        :param check: fail the test, showing the output, when the command exits non-zero.
        """
        proc = subprocess.run(
            [AIRFLOW, *args],
            env=self.environ(env),
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            import pytest

            pytest.fail(
                f"airflow {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
            )
        return proc

    def dags_test(
        self,
        dag_id: str,
        logical_date: str = LOGICAL_DATE,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float = 240,
    ) -> subprocess.CompletedProcess[str]:
        """``airflow dags test DAG_ID LOGICAL_DATE``, not checked (the caller asserts on its exit code)."""
        return self.run("dags", "test", dag_id, logical_date, env=env, check=False, timeout=timeout)

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata database."""
        with sqlite3.connect(self.db) as db:
            return list(db.execute(sql, args))


def make_airflow_home(
    path: Path, dags_folder: Path | None = None, env: Mapping[str, str] | None = None
) -> AirflowHome:
    """A new Airflow home at ``path`` with a copy of the migrated database.

    :param dags_folder: where DAGs are read from (default: ``path/dags``, created empty).
    :param env: extra settings of every subprocess in this home.
    """
    template = migrated_template()
    path.mkdir(parents=True, exist_ok=True)
    if dags_folder is None:
        dags_folder = path / "dags"
        dags_folder.mkdir(exist_ok=True)
    shutil.copy(template / DB_FILE, path / DB_FILE)
    return AirflowHome(path=path, dags_folder=dags_folder, env=airflow_env(path, dags_folder, env))


@dataclass
class DagRun:
    """One ``airflow dags test`` run in a home of its own: its process, then its exit code, output and DB.

    :param dag_id: the DAG.
    :param home: where its Airflow home is made.
    :param results: a directory the DAG may write to (``QUAMOTION_TEST_RESULTS``), if any.
    :param dags_folder: where the DAG is read from.
    :param logical_date: the run's logical date.
    :param extra_env: more environment (connections, variables).
    """

    dag_id: str
    home: Path
    results: Path | None = None
    dags_folder: Path = SENSOR_DAGS
    logical_date: str = LOGICAL_DATE
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[str] | None = None
    returncode: int | None = None
    output: str = ""
    airflow_home: AirflowHome | None = None

    def start(self, connection_json: str | None = None) -> DagRun:
        """Start ``airflow dags test`` in the background (``connection_json``: ``quamotion_default``)."""
        env: dict[str, str] = {}
        if connection_json is not None:
            env["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = connection_json
        if self.results is not None:
            env["QUAMOTION_TEST_RESULTS"] = str(self.results)
        env.update(self.extra_env)
        self.airflow_home = make_airflow_home(self.home, self.dags_folder)
        self.process = subprocess.Popen(
            [AIRFLOW, "dags", "test", self.dag_id, self.logical_date],
            env=self.airflow_home.environ(env),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def wait(self, timeout: float = 120) -> DagRun:
        """Wait for the run to end (killed, and the test failed, after ``timeout`` seconds)."""
        assert self.process is not None, "start() first"
        if self.returncode is None:
            try:
                self.output, _ = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.output, _ = self.process.communicate()
                raise AssertionError(f"dags test {self.dag_id} timed out:\n{self.output[-4000:]}") from None
            self.returncode = self.process.returncode
        return self

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the run's metadata database."""
        with sqlite3.connect(self.home / DB_FILE) as db:
            return list(db.execute(sql, args))

    def task_states(self) -> dict[str, tuple[str, int]]:
        """``{task_id: (state, try_number)}``."""
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", self.dag_id
        )
        return {task: (state, tries) for task, state, tries in rows}

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        """The XCom value ``key`` of ``task_id`` (JSON-decoded), or ``None``."""
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", self.dag_id, task_id, key
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str | bytes) else value

    def tail(self, n: int = 6000) -> str:
        """The end of the run's output."""
        return self.output[-n:]


# --- servers: airflow api-server and the like, in sessions of their own --------------------------------

API_SERVER_STARTUP_TIMEOUT = 90.0


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


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop a process we started in its own session, and its children, by its id.

    :param process: a process started with ``start_new_session=True`` (its id is its group's).
    :param timeout: seconds to wait after SIGTERM before SIGKILL.
    """
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


def start_api_server(home: AirflowHome, log_path: Path, port: int | None = None) -> ApiServer:
    """Start ``airflow api-server`` on a free 127.0.0.1 port and wait until it answers its health check.

    :param home: the Airflow home (its environment is the server's).
    :param log_path: where the server's output goes.
    :param port: the port (default: a free one).
    """
    import pytest

    port = port or free_port()
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
            stop_process(process)
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
