"""Test-run orchestration: start a run (and wait for it), upload apps and packages, save a run's outputs.

* :class:`QuamotionStartTestRunOperator` posts the run **in the worker** (never in a trigger, whose
  restart would post again), pushes ``test_run_id`` to XCom at once, returns the run id, and optionally
  waits like the test-run sensor (in the worker, or deferred to
  :class:`~airflow_provider_quamotion.triggers.quamotion.QuamotionTestRunTrigger`, imported only when
  the task defers). The wait helpers come from :mod:`airflow_provider_quamotion.runs`.

  **No duplicate run on retry.** Right after posting, the run's id is saved in Airflow 3.3's task
  state store (``context["task_state_store"]``, kept across the tries of one task instance in one DAG
  run). A later try reads it back first: a run still queued or running is resumed, a run that finished
  without the previous try reporting it (worker lost, timeout) is adopted (its result becomes the
  task's), and only when nothing is stored is a new run posted. Once the task reports a run's outcome
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
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionError,
    QuamotionNotFoundError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.links.quamotion import QuamotionTestRunLink
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
    rendered_dict_error,
    safe_hook_settings,
    wait_deadline,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

#: Task state store key holding the run started by an earlier try of the task instance.
STATE_KEY = "quamotion_test_run_id"

APP_ID = "appId"
APP_DISPLAY_NAME = "displayName"
APP_VERSION = "version"
APP_OS = "operatingSystem"
PACKAGE_NAME = "name"
PACKAGE_VERSION = "version"
GROUP_ID = "deviceGroupId"
GROUP_NAME = "name"
GROUP_DISPLAY_NAME = "displayName"


# --- resolving apps, packages and device groups given by name ------------------------------------------


def _split_version(ref: str) -> tuple[str, str | None]:
    name, sep, version = ref.rpartition(":")
    return (name, version) if sep and name and version else (ref, None)


def _ambiguous(kind: str, ref: str, candidates: Sequence[str], hint: str) -> QuamotionConfigError:
    return QuamotionConfigError(
        f"The {kind} {ref!r} is ambiguous: {len(candidates)} match ({', '.join(candidates[:10])}"
        f"{', ...' if len(candidates) > 10 else ''}). {hint}"
    )


def _absent(kind: str, ref: str, known: Sequence[str]) -> QuamotionNotFoundError:
    listed = ", ".join(sorted(set(known))[:20]) or "none"
    return QuamotionNotFoundError(f"No {kind} matches {ref!r} in this project. Known: {listed}.", status=404)


def resolve_application(ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An application record from a dict (used as given) or a name.

    A name matches ``appId`` or ``displayName``; ``"name:version"`` also matches ``version`` or
    ``versionDisplayName``.

    :param ref: the application as a dict or a name.
    :param records: the project's applications (``GET app``).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several match (several versions or operating systems).
    """
    if isinstance(ref, Mapping):
        return dict(ref)
    name, version = _split_version(str(ref).strip())
    matches = [
        r
        for r in records
        if name in (r.get(APP_ID), r.get(APP_DISPLAY_NAME))
        and (version is None or version in (str(r.get(APP_VERSION)), str(r.get("versionDisplayName"))))
    ]
    if not matches:
        raise _absent("application", str(ref), [str(r.get(APP_ID)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "application",
            str(ref),
            [f"{r.get(APP_ID)} {r.get(APP_VERSION)} ({r.get(APP_OS)})" for r in matches],
            "Pass the application as a dict (e.g. the upload operator's result) or as 'appId:version'.",
        )
    return dict(matches[0])


def resolve_test_package(
    ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A test package record from a dict (used as given) or ``"name"`` / ``"name:version"``.

    :param ref: the test package as a dict or a name.
    :param records: the project's test packages (``GET testPackage``).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several versions match.
    """
    if isinstance(ref, Mapping):
        return dict(ref)
    name, version = _split_version(str(ref).strip())
    matches = [
        r
        for r in records
        if r.get(PACKAGE_NAME) == name and (version is None or str(r.get(PACKAGE_VERSION)) == version)
    ]
    if not matches:
        raise _absent("test package", str(ref), [str(r.get(PACKAGE_NAME)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "test package",
            str(ref),
            [f"{r.get(PACKAGE_NAME)} {r.get(PACKAGE_VERSION)}" for r in matches],
            "Pass it as 'name:version' or as a dict.",
        )
    return dict(matches[0])


def resolve_device_group(
    ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """A device group from a dict with a ``deviceGroupId`` (used as given) or an id / name / display name.

    :param ref: the device group as a dict or a string.
    :param records: the project's device groups (``GET deviceGroup``); ``None`` when ``ref`` is a dict
        with an id (no lookup needed).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several match.
    """
    if isinstance(ref, Mapping) and ref.get(GROUP_ID):
        return dict(ref)
    key = str(ref.get(GROUP_NAME) if isinstance(ref, Mapping) else ref).strip()
    records = records or []
    by_id = [r for r in records if r.get(GROUP_ID) == key]
    matches = by_id or [r for r in records if key in (r.get(GROUP_NAME), r.get(GROUP_DISPLAY_NAME))]
    if not matches:
        raise _absent("device group", key, [str(r.get(GROUP_NAME)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "device group",
            key,
            [f"{r.get(GROUP_NAME)} ({r.get(GROUP_ID)})" for r in matches],
            "Pass its deviceGroupId.",
        )
    return dict(matches[0])


def _needs_lookup(ref: Any) -> bool:
    return not isinstance(ref, Mapping)


# --- the operators ----------------------------------------------------------------------------------


class QuamotionStartTestRunOperator(QuamotionBaseOperator):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval is not None:
            warnings.warn(
                "poll_interval= is deprecated and will be removed in the next release; use poke_interval=.",
                AirflowProviderDeprecationWarning,
                stacklevel=2,
            )
            poke_interval = poll_interval
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

    # the run of an earlier try ---------------------------------------------------------------------

    def _remembered(self, context: Context) -> str | None:
        store = context.get("task_state_store")
        if store is None:
            self.log.warning(
                "This Airflow has no task_state_store (Airflow < 3.3): a retry of this task cannot find "
                "the run of its previous try and will start a new one."
            )
            return None
        value = store.get(STATE_KEY)
        return str(value) if value else None

    def _remember(self, context: Context, test_run_id: str) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.set(STATE_KEY, test_run_id)

    def _forget(self, context: Context) -> None:
        store = context.get("task_state_store")
        if store is not None:
            store.delete(STATE_KEY)

    # execution -------------------------------------------------------------------------------------

    def execute(self, context: Context) -> str:
        """Resume the previous try's run or post a new one; push its id; wait if asked."""
        hook = self.hook
        previous = self._remembered(context)
        decision = self._look_at(context, hook, previous) if previous else "new"
        if previous and decision == "adopted":
            return previous
        test_run_id = previous if previous and decision == "resume" else self._start(context, hook)
        push_run_reference(context, hook, test_run_id)
        if not self.wait_for_completion:
            self._forget(context)
            return test_run_id
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
                ),
                method_name="execute_complete",
                timeout=defer_timeout(deadline),
            )
        return self.wait_in_worker(context, hook, test_run_id)

    def _look_at(self, context: Context, hook: QuamotionHook, previous: str) -> str:
        """Decide what to do with the previous try's run: ``"resume"``, ``"adopted"`` or ``"new"``.

        A run still queued or running is resumed. A finished one is adopted: its result is reported
        now (``AirflowFailException`` when it did not pass). A run that no longer exists is forgotten.
        """
        try:
            state, jobs = poll_run(hook, previous, self.allow_skipped)
        except QuamotionNotFoundError:
            self.log.warning("The run %s of a previous try no longer exists; starting a new run.", previous)
            self._forget(context)
            return "new"
        if not state.is_terminal:
            self.log.info(
                "Resuming test run %s started by a previous try (it is %s); not posting a new run.",
                previous,
                state.value,
            )
            return "resume"
        self.log.info("Test run %s of a previous try finished meanwhile (%s).", previous, state.value)
        push_run_reference(context, hook, previous)
        self._report(context, previous, state, jobs)
        return "adopted"

    def _check_rendered(self) -> None:
        """Refuse a dict that Jinja rendered to a string (no ``render_template_as_native_obj``)."""
        for name in ("app", "test_package", "device_group"):
            value = getattr(self, name)
            err = rendered_dict_error(name, value) if isinstance(value, str) else None
            if err is not None:
                raise err
        check_mapping("environment", self.environment)

    def _start(self, context: Context, hook: QuamotionHook) -> str:
        self._check_rendered()
        app = resolve_application(self.app, hook.list_applications() if _needs_lookup(self.app) else [])
        package = resolve_test_package(
            self.test_package, hook.list_test_packages() if _needs_lookup(self.test_package) else []
        )
        group = resolve_device_group(
            self.device_group,
            hook.list_device_groups()
            if not (isinstance(self.device_group, Mapping) and self.device_group.get(GROUP_ID))
            else None,
        )
        run = hook.start_test_run(
            app,
            package,
            str(group[GROUP_ID]),
            parameters=self.parameters or "",
            environment=self.environment,
            schedule=self.schedule or "",
        )
        test_run_id = str(run[api.TEST_RUN_ID])
        self._remember(context, test_run_id)
        self.log.info(
            "Started Quamotion test run %s (app %s %s, package %s %s, device group %s)",
            test_run_id,
            app.get(APP_ID),
            app.get(APP_VERSION),
            package.get(PACKAGE_NAME),
            package.get(PACKAGE_VERSION),
            group.get(GROUP_NAME) or group.get(GROUP_ID),
        )
        return test_run_id

    def _report(self, context: Context, test_run_id: str, state: api.TestRunState, jobs: list[Any]) -> None:
        """Report a finished run: log a pass, or raise ``AirflowFailException``; forget the stored id."""
        self._forget(context)
        if state is api.TestRunState.SUCCESS:
            self.log.info(format_run_success(test_run_id, len(jobs)))
            return
        raise AirflowFailException(format_run_failure(test_run_id, api.summarize_jobs(jobs), len(jobs)))

    def wait_in_worker(self, context: Context, hook: QuamotionHook, test_run_id: str) -> str:
        """Poll in the worker until the run finishes or ``timeout`` passes."""
        deadline, limit = wait_deadline(self.timeout, None)
        state: api.TestRunState | None = None
        last_error = ""
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
            time.sleep(wait)

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
    "resolve_application",
    "resolve_device_group",
    "resolve_test_package",
]
