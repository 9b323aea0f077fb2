"""Sensors: wait for a test run to finish, or for any API condition, in poke, reschedule or deferrable mode.

* :class:`QuamotionTestRunSensor` waits on a run's jobs (the run's state comes from
  :func:`airflow_provider_quamotion.api.run_state_from_jobs`). A finished run that did not pass fails
  the task with :class:`~airflow.sdk.exceptions.AirflowFailException` (no retry: the result will not
  change) and a per-job summary.
* :class:`QuamotionSensor` waits until an endpoint answers and a ``response_check`` accepts the reply.

**Deferrable mode of the generic sensor.** User callables never travel to the triggerer. When
``response_check`` is a *callable*, the trigger only waits until the endpoint is "ready by HTTP" (2xx,
or not 404 with ``not_found_ok``) and hands the parsed reply (at most ``max_event_bytes``) back to the
worker, which runs the check in ``execute_complete``; when the check is false the sensor defers again
after ``poke_interval`` with the same deadline. When ``response_check`` is a *string*, it is the dotted
path of an importable function, which the trigger itself runs on every poll, so the worker is woken
only once, and the reply never leaves the triggerer (use this for large replies).

**Deadlines while deferred.** The sensor's ``timeout`` and the task's ``execution_timeout`` become one
absolute deadline carried into the trigger; at the deadline the task fails with
:class:`~airflow.sdk.exceptions.AirflowSensorTimeout` and a message naming the limit. The deferral
itself gets the same timeout plus :data:`DEFER_GRACE_SECONDS`, a backstop should the triggerer be down.

Module import is light (``airflow.sdk`` and this project's ``api``/``exceptions``/``triggers``); the
hook and its HTTP stack load when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionNotFoundError
from airflow_provider_quamotion.links.quamotion import (
    TEST_RUN_ID_KEY,
    TEST_RUN_URL_KEY,
    QuamotionTestRunLink,
    known_test_run_url,
    test_run_url,
)
from airflow_provider_quamotion.triggers.quamotion import (
    DEFAULT_CONN_ID,
    MAX_EVENT_BYTES,
    STATUS_FAILED,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    QuamotionHttpTrigger,
    QuamotionTestRunTrigger,
    hook_overrides,
    import_check,
    is_transient_error,
    run_check,
    safe_hook_settings,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

#: Extra seconds given to Airflow's own deferral timeout past the trigger's deadline, so the trigger's
#: clear timeout event normally arrives first; Airflow's timeout is the backstop.
DEFER_GRACE_SECONDS = 60.0


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (``False`` when unset)."""
    from airflow.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def wait_deadline(
    timeout: float | None, execution_timeout: timedelta | None, now: float | None = None
) -> tuple[float | None, str]:
    """The absolute deadline (epoch seconds) of a wait starting ``now``, and which limit sets it.

    :param timeout: the sensor's or the wait's ``timeout`` in seconds (``None``: none).
    :param execution_timeout: the task's ``execution_timeout``.
    :param now: the start (default: the current time).
    """
    start = time.time() if now is None else now
    limits: list[tuple[float, str]] = []
    if timeout is not None:
        limits.append((start + float(timeout), f"timeout of {float(timeout):g} s"))
    if execution_timeout is not None:
        seconds = execution_timeout.total_seconds()
        limits.append((start + seconds, f"execution_timeout of {seconds:g} s"))
    if not limits:
        return None, ""
    return min(limits)


def limit_text(timeout: float | None, execution_timeout: timedelta | None) -> str:
    """Which of ``timeout`` and ``execution_timeout`` bounds a wait (the smaller), for messages."""
    return wait_deadline(timeout, execution_timeout, now=0.0)[1] or "deadline"


def defer_timeout(deadline: float | None) -> timedelta | None:
    """Airflow's deferral timeout for a trigger with ``deadline``: the time left plus a grace period."""
    if deadline is None:
        return None
    return timedelta(seconds=max(1.0, deadline - time.time() + DEFER_GRACE_SECONDS))


def format_run_failure(
    test_run_id: str, jobs: Sequence[Mapping[str, Any]], job_count: int | None = None
) -> str:
    """A one-paragraph summary of a run that did not pass: counts, then each job that did not pass.

    :param test_run_id: the run.
    :param jobs: its jobs, or their compact summary (``id``, ``device``/``name``, ``status``).
    :param job_count: the total number of jobs when ``jobs`` is a truncated summary.
    """
    compact = [
        {"id": j.get("id"), "device": j.get("device", j.get(api.JOB_NAME)), "status": j.get("status")}
        for j in jobs
    ]
    total = job_count if job_count is not None else len(compact)
    bad = [j for j in compact if j["status"] != api.JobStatus.SUCCESS.value]
    shown = "; ".join(f"job {j['id']} on device {j['device']}: {j['status']}" for j in bad[:20])
    more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
    truncated = " (summary truncated)" if total > len(compact) else ""
    return (
        f"Quamotion test run {test_run_id} finished and did not pass: {len(bad)} of {total} job(s) did not "
        f"succeed{truncated}: {shown}{more}."
    )


def format_run_success(test_run_id: str, job_count: int) -> str:
    """A log line for a run that passed."""
    return f"Quamotion test run {test_run_id} passed ({job_count} job(s))."


def poll_run(
    hook: QuamotionHook, test_run_id: str, allow_skipped: bool
) -> tuple[api.TestRunState, list[Any]]:
    """One poll of a run: its state and jobs (transient errors are retried by the transport)."""
    jobs = hook.list_jobs(test_run_id)
    return api.run_state_from_jobs(jobs, allow_skipped=allow_skipped), jobs


def run_result(test_run_id: str, state: api.TestRunState, jobs: list[Any]) -> dict[str, Any]:
    """The small value a finished, passed run returns to XCom."""
    return {"test_run_id": test_run_id, "state": state.value, "job_count": len(jobs)}


def handle_run_event(
    event: Mapping[str, Any] | None,
    *,
    limit: str,
    timeout_error: type[Exception] = AirflowSensorTimeout,
) -> dict[str, Any]:
    """Turn a :class:`QuamotionTestRunTrigger` event into a result or the right exception.

    :param event: the event's payload.
    :param limit: which limit the deadline came from (for the timeout message).
    :param timeout_error: raised at the deadline.
    :raises AirflowFailException: the run finished and did not pass.
    :raises QuamotionError: the trigger could not poll (after the transport's retries).
    """
    if not isinstance(event, Mapping):
        raise QuamotionError(f"Unexpected trigger event {event!r}")
    status = event.get("status")
    test_run_id = str(event.get("test_run_id"))
    if status == STATUS_SUCCESS:
        return {"test_run_id": test_run_id, "state": event.get("state"), "job_count": event.get("job_count")}
    if status == STATUS_FAILED:
        raise AirflowFailException(
            format_run_failure(test_run_id, list(event.get("jobs") or []), event.get("job_count"))
        )
    if status == STATUS_TIMEOUT:
        raise timeout_error(f"{event.get('message')} Limit: the {limit or 'deadline'}.")
    raise QuamotionError(f"Waiting for Quamotion test run {test_run_id} failed: {event.get('message')}")


class QuamotionTestRunSensor(BaseSensorOperator):
    """Wait until a Quamotion Cloud test run finishes; fail with a per-job summary when it did not pass.

    Succeeds (returning ``{"test_run_id", "state", "job_count"}``) when every job succeeded (or was
    skipped, with ``allow_skipped``). Fails with ``AirflowFailException`` when the run finished
    otherwise, so Airflow does not retry a finished failure. Transient API errors are retried by the
    transport; a transient failure left after the retries (429, 5xx, a dropped connection, a timeout)
    is "not yet" (the sensor pokes again until its ``timeout``); a permanent one (401/403, 404, other
    4xx) fails the poke.

    :param test_run_id: the run to wait on (templated).
    :param allow_skipped: count ``skipped`` jobs as passed.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param quamotion_conn_id: the Airflow connection ID.
    :param hook_settings: non-secret overrides of the connection's settings (``timeout``, ``project``...).
    :param kwargs: ``poke_interval``, ``timeout``, ``mode`` and the rest of ``BaseSensorOperator``.
    """

    template_fields = ("test_run_id",)
    operator_extra_links = (QuamotionTestRunLink(),)
    ui_color = "#d9ecf5"

    def __init__(
        self,
        *,
        test_run_id: str,
        allow_skipped: bool = False,
        deferrable: bool | None = None,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_settings: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.allow_skipped = allow_skipped
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.quamotion_conn_id = quamotion_conn_id
        self.hook_settings = dict(hook_settings or {})
        if self.deferrable:
            safe_hook_settings(self.hook_settings)  # fail at parse time, not in the triggerer

    @cached_property
    def hook(self) -> QuamotionHook:
        """The sync hook (imported on first use)."""
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

        return QuamotionHook(self.quamotion_conn_id, **hook_overrides(self.hook_settings))

    def execute(self, context: Context) -> Any:
        """Poke/reschedule as any sensor, or defer to :class:`QuamotionTestRunTrigger`."""
        push_run_reference(context, self.hook, str(self.test_run_id))
        if not self.deferrable:
            return super().execute(context)
        deadline, _ = wait_deadline(self.timeout, self.execution_timeout)
        self.defer(
            trigger=QuamotionTestRunTrigger(
                test_run_id=str(self.test_run_id),
                quamotion_conn_id=self.quamotion_conn_id,
                poll_interval=self.poke_interval,
                deadline=deadline,
                allow_skipped=self.allow_skipped,
                hook_settings=safe_hook_settings(self.hook_settings),
            ),
            method_name="execute_complete",
            timeout=defer_timeout(deadline),
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One poll: done when the run passed; ``AirflowFailException`` when it finished otherwise."""
        test_run_id = str(self.test_run_id)
        try:
            state, jobs = poll_run(self.hook, test_run_id, self.allow_skipped)
        except QuamotionError as err:
            if not is_transient_error(err, self.hook.settings.retry.retry_statuses):
                raise
            self.log.warning(
                "Polling Quamotion test run %s failed after the transport's retries (%s: %s); poking "
                "again in %s s",
                test_run_id,
                type(err).__name__,
                err,
                self.poke_interval,
            )
            return False
        self.log.info("Quamotion test run %s is %s (%d job(s))", test_run_id, state.value, len(jobs))
        if state is api.TestRunState.SUCCESS:
            self.log.info(format_run_success(test_run_id, len(jobs)))
            return PokeReturnValue(True, run_result(test_run_id, state, jobs))
        if state is api.TestRunState.FAILED:
            raise AirflowFailException(format_run_failure(test_run_id, jobs))
        return False

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Resume after the trigger: the run's result, or the failure / timeout it reported."""
        limit = f"sensor's {limit_text(self.timeout, self.execution_timeout)}"
        result = handle_run_event(event, limit=limit)
        self.log.info(format_run_success(result["test_run_id"], result.get("job_count") or 0))
        return result


def push_run_reference(context: Context, hook: QuamotionHook, test_run_id: str) -> None:
    """Push the run's id and portal URL to XCom (the extra link reads them; no API call to render it)."""
    ti = context["ti"]
    ti.xcom_push(key=TEST_RUN_ID_KEY, value=test_run_id)
    try:
        # From the settings when the project is named: no token request, no project lookup.
        url = known_test_run_url(hook.settings.base_url, hook.settings.project, test_run_id) or test_run_url(
            hook.settings.base_url, hook.get_conn().api_root(), test_run_id
        )
    except QuamotionError as err:  # the link is a convenience: never fail the task for it
        hook.log.warning("Cannot build the portal link of test run %s: %s", test_run_id, err)
        return
    ti.xcom_push(key=TEST_RUN_URL_KEY, value=url)


class QuamotionSensor(BaseSensorOperator):
    """Wait until a Quamotion Cloud endpoint answers and, optionally, ``response_check`` accepts the reply.

    :param endpoint: ``"testRun"`` (project-relative), ``"/api/version"`` (host root) or a URL on the
        connection's origin (templated).
    :param response_check: a callable taking the parsed reply (JSON, or text when the reply is not JSON)
        and returning a bool or a ``PokeReturnValue`` (whose ``xcom_value`` is returned); or the dotted
        path of such a function, which in deferrable mode runs in the triggerer. Default: any 2xx.
    :param query_params: query parameters (templated). Named so because ``params`` is every
        operator's DAG-params argument.
    :param method: the HTTP method.
    :param not_found_ok: treat HTTP 404 as "not yet" instead of an error.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param quamotion_conn_id: the Airflow connection ID.
    :param hook_settings: non-secret overrides of the connection's settings.
    :param max_event_bytes: in deferrable mode with a callable check, the largest reply handed from the
        triggerer to the worker; a larger one fails the task with a message saying what to do.
    :param kwargs: ``poke_interval``, ``timeout``, ``mode`` and the rest of ``BaseSensorOperator``.
    """

    template_fields = ("endpoint", "query_params")
    ui_color = "#d9ecf5"

    def __init__(
        self,
        *,
        endpoint: str,
        response_check: Callable[[Any], Any] | str | None = None,
        query_params: Mapping[str, Any] | None = None,
        method: str = "GET",
        not_found_ok: bool = False,
        deferrable: bool | None = None,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_settings: Mapping[str, Any] | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.response_check = response_check
        self.query_params = query_params
        self.method = method.upper()
        self.not_found_ok = not_found_ok
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.quamotion_conn_id = quamotion_conn_id
        self.hook_settings = dict(hook_settings or {})
        self.max_event_bytes = max_event_bytes
        if self.deferrable:
            safe_hook_settings(self.hook_settings)

    @cached_property
    def hook(self) -> QuamotionHook:
        """The sync hook (imported on first use)."""
        from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

        return QuamotionHook(self.quamotion_conn_id, **hook_overrides(self.hook_settings))

    def _check(self) -> Callable[[Any], Any] | None:
        if isinstance(self.response_check, str):
            return import_check(self.response_check)
        return self.response_check

    def _judge(self, body: Any) -> tuple[bool, Any]:
        check = self._check()
        if check is None:
            return True, None
        return run_check(check, body)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One call: ``False`` on 404 with ``not_found_ok``; else the check's verdict on the reply."""
        from airflow_provider_quamotion.transport.jsonio import MAX_BODY_BYTES, read_json_or_text

        try:
            response = self.hook.request(self.method, self.endpoint, params=self.query_params, stream=True)
            # the body is read within a byte budget, and the connection's timeout bounds all of it
            body = read_json_or_text(
                response, max_bytes=MAX_BODY_BYTES, deadline=time.time() + self.hook.settings.timeout
            )
        except QuamotionNotFoundError:
            if not self.not_found_ok:
                raise
            self.log.info("%s %s: 404, not there yet", self.method, self.endpoint)
            return False
        except QuamotionError as err:
            if not is_transient_error(err, self.hook.settings.retry.retry_statuses):
                raise
            self.log.warning(
                "%s %s failed after the transport's retries (%s: %s); poking again in %s s",
                self.method,
                self.endpoint,
                type(err).__name__,
                err,
                self.poke_interval,
            )
            return False
        done, xcom_value = self._judge(body)
        return PokeReturnValue(done, xcom_value)

    def execute(self, context: Context) -> Any:
        """Poke/reschedule as any sensor, or defer to :class:`QuamotionHttpTrigger`."""
        if not self.deferrable:
            return super().execute(context)
        if isinstance(self.response_check, str):
            import_check(self.response_check)  # fail now, in the worker, for a bad path
        deadline, _ = wait_deadline(self.timeout, self.execution_timeout)
        self._defer(deadline, first_delay=0.0)

    def _defer(self, deadline: float | None, first_delay: float) -> None:
        self.defer(
            trigger=QuamotionHttpTrigger(
                endpoint=self.endpoint,
                quamotion_conn_id=self.quamotion_conn_id,
                method=self.method,
                params=dict(self.query_params) if self.query_params else None,
                not_found_ok=self.not_found_ok,
                response_check_path=self.response_check if isinstance(self.response_check, str) else None,
                poll_interval=self.poke_interval or 1.0,
                deadline=deadline,
                hook_settings=safe_hook_settings(self.hook_settings),
                first_delay=first_delay,
                max_event_bytes=self.max_event_bytes,
            ),
            method_name="execute_complete",
            timeout=defer_timeout(deadline),
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        """Judge the trigger's reply in the worker; defer again (same deadline) while the check is false."""
        if not isinstance(event, Mapping):
            raise QuamotionError(f"Unexpected trigger event {event!r}")
        status = event.get("status")
        limit = f"sensor's {limit_text(self.timeout, self.execution_timeout)}"
        if status == STATUS_TIMEOUT:
            raise AirflowSensorTimeout(f"{event.get('message')} Limit: the {limit}.")
        if status != STATUS_SUCCESS:
            raise QuamotionError(f"QuamotionSensor on {self.endpoint}: {event.get('message')}")
        if event.get("checked"):
            return event.get("xcom_value")
        done, xcom_value = self._judge(event.get("body"))
        if done:
            return xcom_value
        deadline = event.get("deadline")
        if deadline is not None and time.time() >= deadline:
            raise AirflowSensorTimeout(
                f"{self.method} {self.endpoint}: response_check was still false at the deadline. "
                f"Limit: the {limit}."
            )
        self.log.info("response_check is false; polling again in %s s", self.poke_interval)
        self._defer(deadline, first_delay=self.poke_interval)


__all__ = [
    "DEFER_GRACE_SECONDS",
    "QuamotionSensor",
    "QuamotionTestRunSensor",
    "default_deferrable",
    "format_run_failure",
    "handle_run_event",
    "push_run_reference",
    "wait_deadline",
]
