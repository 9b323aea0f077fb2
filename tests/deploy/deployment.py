"""A production-shaped Airflow on loopback: what the deployment tests (``tests/deploy/``) run against.

:class:`Deployment` starts, each in a process group of its own and on 127.0.0.1 only:

* PostgreSQL through ``scripts/postgres.sh`` (its own port and directory): the ``airflow`` metadata
  database and the ``warehouse`` database of the ``quamotion_warehouse`` connection;
* Redis (Debian's ``redis-server``, ``scripts/system-deps.sh``): the Celery broker;
* the sandbox (Quamotion Cloud and Azure AD over TLS), a :class:`~airflow_provider_quamotion.sandbox.Sandbox`;
* Airflow's ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and a ``celery worker``
  (CeleryExecutor), reading the example DAGs and any DAG file in ``tests/deploy/dags/``.

The connection ``quamotion_default`` lives in the metadata database, encrypted with a Fernet key, as a
data team keeps it (not in the environment); the Variables too. Every service is stopped by its
process group's id (:meth:`Deployment.stop`), also when starting failed; the ids are written to
``test-artifacts/deploy/session-<pid>/pids.json`` so ``python -m tests.deploy.leftovers`` can prove, after the session, that none survived.

The tests drive it through the REST API (:meth:`Deployment.trigger`, :meth:`unpause`,
:meth:`wait_for_dag_run`), the CLI (:meth:`airflow`), SQL on both databases (:meth:`meta_query`,
:meth:`warehouse_query`), and by killing or restarting a service (:meth:`kill`, :meth:`restart`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import (
    AIRFLOW,
    EXAMPLE_DAGS,
    REPO,
    AirflowHome,
    ApiServer,
    airflow_env,
    free_port,
    start_api_server,
    stop_process,
)

#: Extra DAG files of the deployment tests (another test file may add its own here).
DEPLOY_DAGS = REPO / "tests" / "deploy" / "dags"
POSTGRES_SH = REPO / "scripts" / "postgres.sh"
#: Where each session's services write their output (``session-<pytest pid>/``, kept by CI as artifacts).
ARTIFACTS = REPO / "test-artifacts" / "deploy"
#: In a session's folder: the process ids of its services, for ``python -m tests.deploy.leftovers``.
PIDS_FILE = "pids.json"
META_DB = "airflow"
WAREHOUSE_DB = "warehouse"
#: The Airflow services, in the order they start (the api-server first: the others need its URL).
SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer", "worker")
STARTUP_TIMEOUT = 120.0
TERMINAL = frozenset({"success", "failed"})


def _fernet_key() -> str:
    """A fresh Fernet key (what ``cryptography.fernet.Fernet.generate_key`` returns)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class Service:
    """One running server: its process (a group of its own) and its log.

    :param name: ``scheduler``, ``redis``...
    :param process: the process, started with ``start_new_session=True``.
    :param log_path: where its output goes.
    """

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        """The process's id, also its group's."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the process has not exited."""
        return self.process.poll() is None

    def log_tail(self, size: int = 4000) -> str:
        """The end of the service's output."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


@dataclass
class Deployment:
    """The deployment's settings and running services (see the module's docstring).

    :param root: a directory of its own (Airflow home, exports, logs of the services).
    :param sandbox_run_seconds: how long a test run created in the sandbox runs.
    :param worker_concurrency: task slots of the Celery worker.
    """

    root: Path
    sandbox_run_seconds: float = 8.0
    worker_concurrency: int = 6
    services: dict[str, Service] = field(default_factory=dict)
    sandbox: Sandbox | None = None
    api: ApiServer | None = None
    home: AirflowHome | None = None
    pg_dir: Path | None = None
    pg_port: int = 0
    redis_port: int = 0
    api_port: int = 0
    _stopped: bool = False

    # --- paths and settings ---------------------------------------------------------------------------

    @property
    def artifacts(self) -> Path:
        """This session's folder of service logs (and ``pids.json``): concurrent sessions never share one."""
        return ARTIFACTS / f"session-{os.getpid()}"

    @property
    def airflow_home(self) -> Path:
        """``AIRFLOW_HOME`` of every Airflow service."""
        return self.root / "home"

    @property
    def dags_folder(self) -> Path:
        """The DAGs folder: links to the example DAGs and to ``tests/deploy/dags/*.py``."""
        return self.root / "dags"

    @property
    def exports(self) -> Path:
        """The Variable ``quamotion_export_base``: where the DAGs write their files."""
        return self.root / "exports"

    @property
    def logs(self) -> Path:
        """Airflow's task logs (``[logging] base_log_folder``)."""
        return self.airflow_home / "logs"

    def pg_uri(self, database: str) -> str:
        """The URI of a database of the deployment's PostgreSQL."""
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/{database}"

    def _airflow_settings(self) -> dict[str, str]:
        meta = self.pg_uri(META_DB).replace("postgresql://", "postgresql+psycopg2://")
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__PARALLELISM": "16",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.pg_uri(META_DB),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL": "False",
            # A task whose worker died is failed (then retried) within seconds, not five minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "15",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            # A dead triggerer's triggers go to a live one within seconds.
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "8",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        }

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> Deployment:
        """Start everything (stopping what was started when a step fails); returns ``self``."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.artifacts, ignore_errors=True)  # an earlier session of this pid
            self.artifacts.mkdir(parents=True)
            self._link_dags()
            self._start_postgres()
            self._start_redis()
            self.sandbox = Sandbox(
                self.root / "sandbox",
                runs=300,
                seed=7,
                queue_seconds=0.5,
                run_seconds=self.sandbox_run_seconds,
            ).start()
            self._record_pids()
            self.api_port = free_port()
            self.home = AirflowHome(
                self.airflow_home,
                self.dags_folder,
                env=airflow_env(self.airflow_home, self.dags_folder, self._airflow_settings()),
            )
            self.airflow_home.mkdir(parents=True, exist_ok=True)
            self.airflow("db", "migrate", timeout=300)
            self._add_connections_and_variables()
            self.api = start_api_server(self.home, self.artifacts / "api-server.log", port=self.api_port)
            self.services["api-server"] = Service("api-server", self.api.process, self.api.log_path)
            for name in SERVICES[1:]:
                self.start_service(name)
            self._wait_dags_parsed()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every service by its process group's id (Airflow first, PostgreSQL last); idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for name in reversed(list(self.services)):
            stop_process(self.services[name].process)
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.pg_dir is not None:
            subprocess.run(["bash", str(POSTGRES_SH), "stop"], env=self._pg_env(), check=False, timeout=60)
            shutil.rmtree(self.pg_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the task logs, for a failure's post-mortem (CI artifacts)
            shutil.copytree(self.logs, self.artifacts / "task-logs", dirs_exist_ok=True)

    def _record_pids(self) -> None:
        """Write every started process group's id (and PostgreSQL's postmaster) to ``pids.json``."""
        pids = {name: svc.pid for name, svc in self.services.items()}
        if self.sandbox is not None:
            pids["sandbox"] = self.sandbox.pid
        if self.pg_dir is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids["postgres"] = int((self.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
        # The owner (this process): while it runs, its services are not left over but in use.
        pids["owner"] = os.getpid()
        record = {name: [pid, start_time(pid)] for name, pid in pids.items()}
        (self.artifacts / PIDS_FILE).write_text(json.dumps(record))

    # --- the servers ----------------------------------------------------------------------------------

    def _link_dags(self) -> None:
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        files = [*EXAMPLE_DAGS.glob("*.py"), *DEPLOY_DAGS.glob("*.py")]
        for path in files:
            if path.name != "__init__.py":
                (self.dags_folder / path.name).symlink_to(path)

    def _pg_env(self) -> dict[str, str]:
        return {**os.environ, "QUAMOTION_PG_DIR": str(self.pg_dir), "QUAMOTION_PG_PORT": str(self.pg_port)}

    def _start_postgres(self) -> None:
        # Beside the other temporary files, not under pytest's root-only 0700 tree: as root the
        # server runs as the `postgres` user, which must reach its directory.
        self.pg_dir = Path(tempfile.mkdtemp(prefix="quamotion-deploy-pg-"))
        self.pg_port = free_port()
        out = subprocess.run(
            ["bash", str(POSTGRES_SH), "start"],
            env=self._pg_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"scripts/postgres.sh start exited {out.returncode}: {out.stderr[-3000:]}")
        self._record_pids()
        import psycopg

        with psycopg.connect(self.pg_uri("postgres"), autocommit=True) as db:
            for name in (META_DB, WAREHOUSE_DB):
                db.execute(f'CREATE DATABASE "{name}"')

    def _start_redis(self) -> None:
        redis = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(redis, os.X_OK):
            raise RuntimeError("redis-server is not installed: run `make system-deps` (Debian redis-server)")
        self.redis_port = free_port()
        folder = self.root / "redis"
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            redis,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.redis_port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        args += ["--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"]
        self._spawn("redis", args, env=dict(os.environ), cwd=folder)
        deadline = time.monotonic() + 30
        import socket

        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.redis_port), 1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            if not self.services["redis"].alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{self.services['redis'].log_tail()}")
            time.sleep(0.2)

    def _spawn(self, name: str, args: list[str], *, env: Mapping[str, str], cwd: Path) -> Service:
        log_path = self.artifacts / f"{name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                args, env=dict(env), cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.services[name] = Service(name, process, log_path)
        self._record_pids()
        return self.services[name]

    def start_service(self, name: str) -> Service:
        """Start the Airflow service ``name`` (``scheduler``, ``dag-processor``, ``triggerer``, ``worker``).

        :param name: one of :data:`SERVICES` but the api-server.
        """
        assert self.home is not None
        command = {
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
            "worker": ["celery", "worker", "--without-gossip", "--without-mingle"],
        }[name]
        return self._spawn(name, [AIRFLOW, *command], env=self.home.environ(), cwd=self.airflow_home)

    def kill(self, name: str) -> None:
        """SIGKILL a service's whole process group (as a crash or an OOM kill would) and reap it.

        :param name: the service.
        """
        service = self.services[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGKILL)
        service.process.wait(30)

    def restart(self, name: str, *, kill: bool = True) -> Service:
        """Stop (SIGKILL by default, else SIGTERM) and start a service again.

        :param name: the service.
        :param kill: SIGKILL, not a graceful stop.
        """
        if kill:
            self.kill(name)
        else:
            stop_process(self.services[name].process)
        return self.start_service(name)

    def skip_retry_delay(self, dag_id: str, run_id: str, delay: float, timeout: float = 120.0) -> set[str]:
        """Wait until some task of a run is up for retry, then move its failed try's end ``delay``
        seconds back, so the scheduler retries it now instead of after its ``retry_delay`` (time
        skipped, nothing else changed: the scheduler still decides and queues the retry).

        :param dag_id: the DAG.
        :param run_id: the run.
        :param delay: the tasks' ``retry_delay`` in seconds.
        :param timeout: seconds to wait for a task up for retry.
        :returns: the tasks whose wait was skipped.
        """
        query = "FROM task_instance WHERE dag_id = %s AND run_id = %s AND state = 'up_for_retry'"
        self.wait_until(
            lambda: self.meta_query("SELECT count(*) " + query, dag_id, run_id)[0][0] > 0, timeout, "a retry"
        )
        rows = self.meta_query(
            "UPDATE task_instance SET end_date = end_date - make_interval(secs => %s) "  # noqa: S608
            + query.removeprefix("FROM task_instance ")
            + " RETURNING task_id",
            delay,
            dag_id,
            run_id,
        )
        return {task for (task,) in rows}

    def wait_for_job(self, job_type: str, after: float, timeout: float = 90.0) -> None:
        """Wait until a ``job_type`` job (``TriggererJob``...) started after ``after`` heartbeats.

        :param job_type: Airflow's job type.
        :param after: a POSIX time.
        :param timeout: seconds.
        """
        since = dt.datetime.fromtimestamp(after, dt.timezone.utc)
        self.wait_until(
            lambda: (
                self.meta_query(
                    "SELECT count(*) FROM job WHERE job_type = %s AND state = 'running' AND start_date >= %s",
                    job_type,
                    since,
                )[0][0]
                > 0
            ),
            timeout,
            f"a running {job_type}",
        )

    # --- connections, variables, DAGs -----------------------------------------------------------------

    def _add_connections_and_variables(self) -> None:
        assert self.sandbox is not None
        warehouse = {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": self.pg_port,
            "login": "postgres",
            "schema": WAREHOUSE_DB,
        }
        # From a file (`connections import`), not `connections add --conn-json`: Airflow's CLI audit
        # log (the metadata database's `log` table) keeps the whole command line, masking only the
        # JSON's top-level secret keys, so an API key in the extra would land there in clear.
        connections = {
            "quamotion_default": json.loads(self.sandbox.connection_json),
            "quamotion_warehouse": warehouse,
        }
        for conn in connections.values():
            if isinstance(conn.get("extra"), Mapping):
                conn["extra"] = json.dumps(conn["extra"])
        file = self.root / "connections.json"
        file.touch(mode=0o600)
        file.write_text(json.dumps(connections))
        try:
            self.airflow("connections", "import", str(file))
        finally:
            file.unlink()
        files = EXAMPLE_DAGS / "files"
        variables = {
            "quamotion_export_base": str(self.exports),
            "quamotion_app_path": str(files / "Acquaint.apk"),
            "quamotion_test_package_path": str(files / "acquaint-tests.zip"),
        }
        (self.root / "variables.json").write_text(json.dumps(variables))
        self.airflow("variables", "import", str(self.root / "variables.json"))  # one CLI start, not three

    def _wait_dags_parsed(self) -> None:
        expected = {p.stem for p in self.dags_folder.glob("*.py")}
        self.wait_until(
            lambda: len(self.api_json("/api/v2/dags?limit=100")["dags"]) >= len(expected),
            STARTUP_TIMEOUT,
            "the dag-processor to parse the DAGs",
        )

    def airflow(
        self, *args: str, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``airflow ARGS`` with the deployment's settings.

        :param args: the CLI's arguments.
        :param timeout: seconds.
        :param check: fail (the test, or the fixture) when it exits non-zero, showing its output.
        """
        assert self.home is not None
        return self.home.run(*args, check=check, timeout=timeout)

    def api_json(self, path: str, method: str = "GET", body: Any = None) -> Any:
        """Call the REST API; its JSON reply.

        :param path: ``/api/v2/...``.
        :param method: the HTTP method.
        :param body: the JSON body.
        """
        assert self.api is not None
        try:
            return self.api.call(method, path, body)
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: {err.code} {err.read()[:2000]!r}") from None

    def unpause(self, dag_id: str, paused: bool = False) -> None:
        """Unpause (or pause) a DAG: the scheduler then runs its schedule.

        :param dag_id: the DAG.
        :param paused: pause instead.
        """
        self.api_json(f"/api/v2/dags/{dag_id}", "PATCH", {"is_paused": paused})

    def trigger(
        self, dag_id: str, logical_date: str | None = None, conf: Mapping[str, Any] | None = None
    ) -> str:
        """Trigger a DAG run as the UI's button does (``logical_date=None`` by default); its run id.

        :param dag_id: the DAG.
        :param logical_date: an ISO date or timestamp, or ``None`` (no date, no data interval).
        :param conf: the run's conf.
        """
        body: dict[str, Any] = {"logical_date": _iso(logical_date) if logical_date else None}
        if conf:
            body["conf"] = dict(conf)
        return str(self.api_json(f"/api/v2/dags/{dag_id}/dagRuns", "POST", body)["dag_run_id"])

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of a DAG (the REST API's form)."""
        return list(self.api_json(f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=id")["dag_runs"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run of a DAG."""
        return dict(self.api_json(f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}"))

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """``{task_id: task instance}`` of a run (mapped tasks: the last map index wins)."""
        reply = self.api_json(f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances?limit=1000")
        return {ti["task_id"]: ti for ti in reply["task_instances"]}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """A task's XCom value (deserialised)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api_json(path + "?deserialize=true&stringify=false")["value"]

    def wait_for_dag_run(self, dag_id: str, run_id: str, timeout: float = 240.0) -> dict[str, Any]:
        """Wait until a run ends (success or failed); the run. Raises, with the failed tasks' logs, on timeout.

        :param dag_id: the DAG.
        :param run_id: the run.
        :param timeout: seconds.
        """
        runs = self.wait_for_dag_runs(dag_id, [run_id], timeout)
        return runs[0]

    def wait_for_dag_runs(
        self, dag_id: str, run_ids: Iterable[str], timeout: float = 240.0
    ) -> list[dict[str, Any]]:
        """Wait until all of ``run_ids`` end; the runs, in that order.

        :param dag_id: the DAG.
        :param run_ids: its runs.
        :param timeout: seconds.
        """
        ids = list(run_ids)
        found: dict[str, dict[str, Any]] = {}

        def done() -> bool:
            for run_id in ids:
                if run_id not in found:
                    run = self.dag_run(dag_id, run_id)
                    if run["state"] in TERMINAL:
                        found[run_id] = run
            return len(found) == len(ids)

        self.wait_until(done, timeout, f"runs of {dag_id} to end: {sorted(set(ids) - set(found))}")
        return [found[i] for i in ids]

    def wait_until(self, condition: Any, timeout: float, what: str, every: float = 0.5) -> None:
        """Poll ``condition()`` until true; on timeout raise with what each service last printed.

        :param condition: a callable returning a truth value.
        :param timeout: seconds.
        :param what: what is awaited (for the error).
        :param every: seconds between polls.
        """
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [name for name, svc in self.services.items() if not svc.alive()]
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:.0f}s waiting for {what}; dead: {dead}\n{self.report()}"
                )
            time.sleep(every)

    def report(self, size: int = 1500) -> str:
        """The end of every service's output (for a failure message)."""
        return "\n".join(f"--- {name} ---\n{svc.log_tail(size)}" for name, svc in self.services.items())

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """A task try's log as the REST API serves it (text)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{_quote(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        reply = self.api_json(path + "?full_content=true")
        content = reply.get("content", "")
        if isinstance(content, list):
            return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)
        return str(content)

    # --- the databases --------------------------------------------------------------------------------

    def meta_query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the metadata database."""
        return _query(self.pg_uri(META_DB), sql, args)

    def warehouse_query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of a query on the warehouse database (``[]`` for a statement without rows)."""
        return _query(self.pg_uri(WAREHOUSE_DB), sql, args)

    def pg_dump(self, database: str = META_DB) -> str:
        """``pg_dump`` of a database (plain SQL text).

        :param database: the database.
        """
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]
        out = subprocess.run(
            [str(bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", database],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return out.stdout

    def log_files(self) -> Iterator[Path]:
        """Every log file: Airflow's task and service logs, each server's output, PostgreSQL's log."""
        roots = [self.airflow_home, self.artifacts]
        if self.pg_dir is not None:
            roots.append(self.pg_dir)
        for root in roots:
            for path in root.rglob("*"):
                if path.is_file() and (path.suffix == ".log" or "logs" in path.parts):
                    yield path


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (``/proc``, in clock ticks), to tell it from a later one of that id.

    :param pid: a process id.
    """
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _query(uri: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(uri, autocommit=True) as db, db.cursor() as cursor:
        cursor.execute(sql, args or None)
        return list(cursor.fetchall()) if cursor.description else []


def _iso(value: str) -> str:
    """``2026-11-20`` -> ``2026-11-20T00:00:00+00:00`` (the REST API wants a timestamp)."""
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.isoformat()


def _quote(run_id: str) -> str:
    from urllib.parse import quote

    return quote(run_id, safe="")
