"""Test-run orchestration: start a run (and wait for it), upload apps and packages, save a run's outputs.

* :class:`QuamotionStartTestRunOperator` posts the run **in the worker** (never in a trigger, whose
  restart would post again), pushes ``test_run_id`` to XCom at once, returns the run id, and optionally
  waits like the test-run sensor (in the worker, or deferred to
  :class:`~airflow_provider_quamotion.triggers.quamotion.QuamotionTestRunTrigger`, imported only when
  the task defers). The wait helpers come from :mod:`airflow_provider_quamotion.runs`.

  **No duplicate run on retry.** The operator is a ``ResumableJobMixin`` (``airflow.sdk``, Airflow
  3.3): right after posting, the mixin saves the run's id in the task state store
  (``context["task_state_store"]``, kept across the tries of one task instance in one DAG run). A
  later try reads it back first: a run still queued or running is resumed, a run that finished
  without the previous try reporting it (worker lost, timeout) is adopted (its result becomes the
  task's), a run that no longer exists is replaced, and only when nothing is stored is a new run
  posted. Below 3.3 (common-compat's stand-in) every try posts a new run, with one log line saying so. Once the task reports a run's outcome
  the key is deleted, so clearing the task afterwards starts a fresh run. (XCom cannot carry this:
  Airflow clears a task instance's XComs when a new try starts.)
* :class:`QuamotionUploadOperator` uploads an app (.apk / .ipa) or a test package from a local path, a
  URI or an ``ObjectStoragePath``, streamed, and returns the created item.
* :class:`QuamotionJobArtifactsOperator` streams each job's log and artifacts zip of a run to a
  directory or object storage prefix, atomically, and returns a small summary (file count, total bytes,
  destination prefix).

These classes are re-exported from :mod:`airflow_provider_quamotion.operators.quamotion`.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.compat import (
    HAS_RESUMABLE_JOBS,
    AirflowFailException,
    ResumableJobMixin,
    log_degraded,
)
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionError,
    QuamotionNotFoundError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.links.quamotion import QuamotionTestRunLink
from airflow_provider_quamotion.logs import DEFAULT_LOG_BUDGET_BYTES, JobLogFollower, check_log_budget
from airflow_provider_quamotion.operators.base import QuamotionBaseOperator
from airflow_provider_quamotion.runs import (
    DEFAULT_CONN_ID,
    check_mapping,
    defer_timeout,
    format_run_failure,
    format_run_success,
    handle_run_event,
    is_transient_error,
    limit_text,
    poll_run,
    push_run_reference,
    renamed_argument,
    rendered_dict_error,
    safe_hook_settings,
    wait_deadline,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

#: Task state store key holding the run started by an earlier try of the task instance.
STATE_KEY = "quamotion_test_run_id"

_NO_RESUME = (
    "a retry of QuamotionStartTestRunOperator cannot find the run of its previous try and starts a new one"
)

#: The name resolvers live in the hook (``QuamotionHook.resolve_application`` and friends); these
#: names are re-exported from there, lazily (the hook is not imported at DAG-parse time).
_FROM_HOOK = ("resolve_application", "resolve_device_group", "resolve_test_package")


def __getattr__(name: str) -> Any:
    if name in _FROM_HOOK:
        from airflow_provider_quamotion.hooks import quamotion as hooks

        return getattr(hooks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- the operators ----------------------------------------------------------------------------------


class QuamotionStartTestRunOperator(ResumableJobMixin, QuamotionBaseOperator):
    """Start a Quamotion Cloud test run; push its id to XCom at once; optionally wait for it.

    Returns the run's id (also in XCom under ``test_run_id``, with the portal URL under
    ``test_run_url`` for the "Quamotion Cloud test run" link). With ``wait_for_completion`` the task
    fails like the sensor: ``AirflowFailException`` with a per-job summary when the run did not pass,
    :class:`~airflow_provider_quamotion.exceptions.QuamotionTimeoutError` at ``timeout`` (retryable: a
    retry resumes the same run). On retry the run of the previous try is resumed, never posted again
    (see the module's docstring).

    :param app: the application: a dict (e.g. from :class:`QuamotionUploadOperator`) or a name
        (``appId`` or display name, ``"name:version"`` to pick a version) (templated).
    :param test_package: the test package: a dict, ``"name"`` or ``"name:version"`` (templated).
    :param device_group: the device group: a dict with ``deviceGroupId``, its id, or its name (templated).
    :param parameters: test script parameters (templated).
    :param environment: test script environment variables (templated).
    :param schedule: ``""`` to run now, or a cron string for a recurring run (templated).
    :param wait_for_completion: wait until the run finishes.
    :param allow_skipped: count ``skipped`` jobs as passed.
    :param poke_interval: seconds between polls while waiting (as for the sensors).
    :param poll_interval: deprecated name of ``poke_interval`` (one release, with a warning).
    :param timeout: the longest wait (seconds or ``timedelta``); ``None``: only ``execution_timeout``.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``). Only a task
        that waits defers: ``deferrable=True`` without ``wait_for_completion`` warns and does nothing.
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: non-secret overrides of the connection's settings.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    :param follow_logs: while waiting, show the jobs' new log lines in the task log as they arrive
        (followed live; in the triggerer too); ``False`` shows none.
    :param log_budget_bytes: the most bytes of job log lines the wait shows (all jobs together);
        past it one "truncated" line is written.
    """

    template_fields = (
        "app",
        "test_package",
        "device_group",
        "parameters",
        "environment",
        "schedule",
        "quamotion_conn_id",
    )
    template_fields_renderers = {"app": "json", "test_package": "json", "environment": "json"}
    operator_extra_links = (QuamotionTestRunLink(),)
    ui_color = "#d9ecf5"
    #: ``ResumableJobMixin``: the task state store key of the run an earlier try started.
    external_id_key = STATE_KEY

    def __init__(
        self,
        *,
        app: Mapping[str, Any] | str,
        test_package: Mapping[str, Any] | str,
        device_group: Mapping[str, Any] | str,
        parameters: str = "",
        environment: Mapping[str, str] | None = None,
        schedule: str = "",
        wait_for_completion: bool = False,
        allow_skipped: bool = False,
        poke_interval: float = 30.0,
        timeout: timedelta | float | None = None,
        deferrable: bool | None = None,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        poll_interval: float | None = None,
        follow_logs: bool = True,
        log_budget_bytes: int = DEFAULT_LOG_BUDGET_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.follow_logs = bool(follow_logs)
        self.log_budget_bytes = check_log_budget(log_budget_bytes)
        poke_interval = renamed_argument(
            "poll_interval", poll_interval, "poke_interval", poke_interval, refuse_both=False
        )
        self.app = app
        self.test_package = test_package
        self.device_group = device_group
        self.parameters = parameters
        self.environment = environment
        self.schedule = schedule
        self.wait_for_completion = wait_for_completion
        self.allow_skipped = allow_skipped
        if poke_interval <= 0:
            raise QuamotionConfigError("poke_interval must be a positive number of seconds")
        self.poke_interval = float(poke_interval)
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if deferrable and not wait_for_completion:
            warnings.warn(
                f"{type(self).__name__}(task_id={self.task_id!r}): deferrable=True has no effect without "
                "wait_for_completion=True (the run is posted in the worker and the task ends at once); "
                "set wait_for_completion=True, or wait with QuamotionTestRunSensor(deferrable=True).",
                UserWarning,
                stacklevel=2,
            )
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id,
            hook_params=hook_params,
            hook_settings=hook_settings,
            deferrable=deferrable,
            may_defer=wait_for_completion,
        )

    @property
    def poll_interval(self) -> float:
        """The former name of :attr:`poke_interval` (read-only; removed in the next release)."""
        return self.poke_interval

    # the run of an earlier try: ResumableJobMixin ------------------------------------------------

    def execute(self, context: Context) -> str:
        """Resume the previous try's run or post a new one; push its id; wait if asked."""
        if not HAS_RESUMABLE_JOBS:
            log_degraded("ResumableJobMixin / task_state_store (Airflow 3.3)", _NO_RESUME)
        elif context.get("task_state_store") is None:
            self.log.warning("This task has no task_state_store: %s.", _NO_RESUME)
        self._reported: str | None = None
        result = self.execute_resumable(context)
        return self._reported or str(result)

    def submit_job(self, context: Context) -> str:
        """Post a new run (``ResumableJobMixin``: the mixin stores its id in ``task_state_store``)."""
        self._check_rendered()
        hook = self.hook
        app = hook.resolve_application(self.app)
        package = hook.resolve_test_package(self.test_package)
        group = hook.resolve_device_group(self.device_group)
        run = hook.start_test_run(
            app,
            package,
            str(group[api.DEVICE_GROUP_ID]),
            parameters=self.parameters or "",
            environment=self.environment,
            schedule=self.schedule or "",
        )
        test_run_id = str(run[api.TEST_RUN_ID])
        self.log.info(
            "Started Quamotion test run %s (app %s %s, package %s %s, device group %s)",
            test_run_id,
            app.get("appId"),
            app.get("version"),
            package.get("name"),
            package.get("version"),
            group.get(api.DEVICE_GROUP_NAME) or group.get(api.DEVICE_GROUP_ID),
        )
        return test_run_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """The stored run's state (``queued``, ``running``, ``success``, ``failed``), ``missing`` when gone."""
        try:
            state, self._previous_jobs = poll_run(self.hook, str(external_id), self.allow_skipped)
        except QuamotionNotFoundError:
            self.log.warning(
                "The run %s of a previous try no longer exists; starting a new run.", external_id
            )
            return "missing"
        if state.is_terminal:
            self.log.info("Test run %s of a previous try finished meanwhile (%s).", external_id, state.value)
        else:
            self.log.info(
                "Resuming test run %s started by a previous try (it is %s); not posting a new run.",
                external_id,
                state.value,
            )
        return state.value

    def is_job_active(self, status: str) -> bool:
        """A queued or running run is resumed."""
        return status in (api.TestRunState.QUEUED.value, api.TestRunState.RUNNING.value)

    def is_job_succeeded(self, status: str) -> bool:
        """A finished run is adopted, passed or not: its result becomes this try's (never posted again)."""
        return status in (api.TestRunState.SUCCESS.value, api.TestRunState.FAILED.value)

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        """Push the run's reference; wait for it (in the worker or deferred) when asked."""
        test_run_id = str(external_id)
        push_run_reference(context, self.hook, test_run_id)
        if not self.wait_for_completion:
            self._forget(context)
            self._reported = test_run_id
            return
        if self.deferrable:
            from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger

            deadline, _ = wait_deadline(self.timeout, self.execution_timeout)
            self.defer(
                trigger=QuamotionTestRunTrigger(
                    test_run_id=test_run_id,
                    quamotion_conn_id=self.quamotion_conn_id,
                    poll_interval=self.poke_interval,
                    deadline=deadline,
                    allow_skipped=self.allow_skipped,
                    hook_settings=safe_hook_settings(self.hook_params),
                    follow_logs=self.follow_logs,
                    log_budget_bytes=self.log_budget_bytes,
                ),
                method_name="execute_complete",
                timeout=defer_timeout(deadline),
            )
        self.wait_in_worker(context, self.hook, test_run_id)

    def get_job_result(self, external_id: Any, context: Context) -> str:
        """The run's id; a finished run of a previous try is reported now (``AirflowFailException``)."""
        test_run_id = str(external_id)
        if self._reported == test_run_id:
            return test_run_id
        jobs = getattr(self, "_previous_jobs", None)
        if jobs is None:
            _, jobs = poll_run(self.hook, test_run_id, self.allow_skipped)
        push_run_reference(context, self.hook, test_run_id)
        self._report(
            context, test_run_id, api.run_state_from_jobs(jobs, allow_skipped=self.allow_skipped), jobs
        )
        return test_run_id

    def _forget(self, context: Context) -> None:
        """Delete the stored run id once its outcome is reported: clearing the task starts a fresh run."""
        store = context.get("task_state_store")
        if store is not None:
            store.delete(self.external_id_key)

    def _check_rendered(self) -> None:
        """Refuse a dict that Jinja rendered to a string (no ``render_template_as_native_obj``)."""
        for name in ("app", "test_package", "device_group"):
            value = getattr(self, name)
            err = rendered_dict_error(name, value) if isinstance(value, str) else None
            if err is not None:
                raise err
        check_mapping("environment", self.environment)

    def _report(self, context: Context, test_run_id: str, state: api.TestRunState, jobs: list[Any]) -> None:
        """Report a finished run: log a pass, or raise ``AirflowFailException``; forget the stored id."""
        self._forget(context)
        self._reported = test_run_id
        if state is api.TestRunState.SUCCESS:
            self.log.info(format_run_success(test_run_id, len(jobs)))
            return
        raise AirflowFailException(format_run_failure(test_run_id, api.summarize_jobs(jobs), len(jobs)))

    def wait_in_worker(self, context: Context, hook: QuamotionHook, test_run_id: str) -> str:
        """Poll in the worker until the run finishes or ``timeout`` passes."""
        deadline, limit = wait_deadline(self.timeout, None)
        state: api.TestRunState | None = None
        last_error = ""
        jobs: list[Any] = []
        logs = JobLogFollower(self.log, enabled=self.follow_logs, budget_bytes=self.log_budget_bytes)
        while True:
            try:
                state, jobs = poll_run(hook, test_run_id, self.allow_skipped, deadline)
            except QuamotionError as err:
                if not is_transient_error(err, hook.settings.retry.retry_statuses):
                    raise
                last_error = f" The last poll failed: {type(err).__name__}: {err}"
                self.log.warning(
                    "Polling Quamotion test run %s failed after the transport's retries (%s: %s); "
                    "polling again",
                    test_run_id,
                    type(err).__name__,
                    err,
                )
            else:
                last_error = ""
                self.log.info("Quamotion test run %s is %s (%d job(s))", test_run_id, state.value, len(jobs))
                if state.is_terminal:
                    logs.finish(hook, jobs, deadline)
                    self._report(context, test_run_id, state, jobs)
                    return test_run_id
            wait = self.poke_interval
            if deadline is not None:
                remaining = deadline - time.time()
                if remaining <= 0:
                    raise QuamotionTimeoutError(
                        f"Quamotion test run {test_run_id} did not finish within the wait's {limit}; it was "
                        f"{state.value if state else 'not polled'}. It keeps going in Quamotion Cloud; a "
                        f"retry of this task resumes it.{last_error}"
                    )
                wait = min(wait, remaining)
            logs.sleep(hook, jobs, wait)  # the jobs' new log lines show while waiting

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> str:
        """Resume after the trigger: the run's id, or the failure / timeout it reported."""
        limit = f"wait's {limit_text(self.timeout, self.execution_timeout)}"
        try:
            result = handle_run_event(event, limit=limit, timeout_error=QuamotionTimeoutError)
        except AirflowFailException:
            self._forget(context)
            raise
        self._forget(context)
        self.log.info(format_run_success(result["test_run_id"], result.get("job_count") or 0))
        return str(result["test_run_id"])


class QuamotionUploadOperator(QuamotionBaseOperator):
    """Upload an application (.apk / .ipa) or a test package, streamed; return the created item.

    :param path: a local path, a URI (``s3://bucket/app.apk``) or an ``ObjectStoragePath`` (templated).
    :param kind: ``"application"`` or ``"test_package"``.
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: overrides of the connection's settings.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    """

    template_fields = ("path", "quamotion_conn_id")
    ui_color = "#d9ecf5"
    KINDS = ("application", "test_package")

    def __init__(
        self,
        *,
        path: Any,
        kind: str = "application",
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if kind not in self.KINDS:
            raise QuamotionConfigError(f"kind must be one of {', '.join(self.KINDS)}, not {kind!r}")
        self.path = path
        self.kind = kind
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id, hook_params=hook_params, hook_settings=hook_settings
        )

    def execute(self, context: Context) -> dict[str, Any]:
        """Upload the file; return the item the API created (a small dict)."""
        from airflow_provider_quamotion.storage import to_path

        hook = self.hook
        source = to_path(self.path)
        if self.kind == "application":
            item = hook.upload_application(source)
        else:
            item = hook.upload_test_package(source)
        self.log.info("Uploaded %s %s: %s", self.kind, source, item)
        return item


class QuamotionJobArtifactsOperator(QuamotionBaseOperator):
    """Save each job's log and artifacts zip of a test run to a directory or object storage, streamed.

    Files are named ``job-{id}.log`` and ``job-{id}-artifacts.zip``; each is written to a temporary
    object and moved into place when complete. Artifacts are fetched only for jobs with
    ``hasArtifacts``. Returns a small summary, whatever the number of jobs:
    ``{"test_run_id", "count", "total_bytes", "destination"}`` (files written, their bytes, and the
    destination prefix's URI); each file is ``{destination}/job-{id}.log`` or
    ``{destination}/job-{id}-artifacts.zip``.

    :param test_run_id: the run (templated).
    :param destination: a directory path, a URI (``s3://bucket/runs/{{ ds }}/``) or an
        ``ObjectStoragePath`` (templated).
    :param include_logs: save each job's log.
    :param include_artifacts: save each job's artifacts zip.
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: overrides of the connection's settings.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    """

    template_fields = ("test_run_id", "destination", "quamotion_conn_id")
    ui_color = "#d9ecf5"

    def __init__(
        self,
        *,
        test_run_id: str,
        destination: Any,
        include_logs: bool = True,
        include_artifacts: bool = True,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.destination = destination
        self.include_logs = include_logs
        self.include_artifacts = include_artifacts
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id, hook_params=hook_params, hook_settings=hook_settings
        )

    def execute(self, context: Context) -> dict[str, Any]:
        """Stream the files; return ``{"test_run_id", "count", "total_bytes", "destination"}``."""
        from airflow_provider_quamotion.storage import to_path, uri_of

        hook = self.hook
        test_run_id = str(self.test_run_id)
        jobs = hook.list_jobs(test_run_id)
        state = api.run_state_from_jobs(jobs, allow_skipped=True)
        if not state.is_terminal:
            self.log.warning("Test run %s is %s: its logs may be incomplete.", test_run_id, state.value)
        base = to_path(self.destination)
        count = 0
        total_bytes = 0
        for job in jobs:
            job_id = job.get(api.JOB_ID)
            if job_id is None:
                raise QuamotionError(f"A job of test run {test_run_id} has no {api.JOB_ID!r}: {job!r}")
            if self.include_logs:
                total_bytes += _save(hook, api.job_log(job_id), _child(base, f"job-{job_id}.log"))
                count += 1
            if self.include_artifacts and job.get(api.JOB_HAS_ARTIFACTS):
                target = _child(base, f"job-{job_id}-artifacts.zip")
                total_bytes += _save(hook, api.job_artifacts(job_id), target)
                count += 1
        destination = uri_of(base)
        self.log.info(
            "Saved %d file(s) (%d bytes) of test run %s to %s", count, total_bytes, test_run_id, destination
        )
        return {
            "test_run_id": test_run_id,
            "count": count,
            "total_bytes": total_bytes,
            "destination": destination,
        }


def _save(hook: QuamotionHook, endpoint: str, destination: Any) -> int:
    """Stream ``endpoint``'s body to ``destination`` atomically (as the hook's downloads); its bytes."""
    from airflow_provider_quamotion.storage import atomic_writer

    written = 0
    with hook.request("GET", endpoint, stream=True) as response, atomic_writer(destination) as out:
        response.raw.decode_content = True
        while chunk := response.raw.read(_COPY_CHUNK_BYTES):
            out.write(chunk)
            written += len(chunk)
    return written


_COPY_CHUNK_BYTES = 1024 * 1024


def _child(base: Any, name: str) -> Any:
    return os.path.join(base, name) if isinstance(base, str) else base / name


__all__ = [
    "STATE_KEY",
    "QuamotionJobArtifactsOperator",
    "QuamotionStartTestRunOperator",
    "QuamotionUploadOperator",
]
