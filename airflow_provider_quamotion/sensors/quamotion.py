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

Module import is light (``airflow.sdk`` and this project's ``api``/``exceptions``/``runs``): the
triggers module (and ``airflow.triggers.base``) is imported only when a task defers, and the hook and
its HTTP stack when a task runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_quamotion import api
from airflow_provider_quamotion.compat import AirflowFailException, AirflowSensorTimeout
from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionNotFoundError
from airflow_provider_quamotion.links.quamotion import QuamotionTestRunLink
from airflow_provider_quamotion.logs import (
    DEFAULT_LOG_BUDGET_BYTES,
    POKE_FOLLOW_SECONDS,
    JobLogFollower,
    check_log_budget,
)
from airflow_provider_quamotion.operators.base import QuamotionTaskMixin
from airflow_provider_quamotion.runs import (  # the wait helpers (re-exported here for 0.x callers)
    DEFAULT_CONN_ID,
    DEFER_GRACE_SECONDS,
    MAX_EVENT_BYTES,
    STATUS_SUCCESS,
    STATUS_TIMEOUT,
    check_mapping,
    default_deferrable,
    defer_timeout,
    format_run_failure,
    format_run_success,
    handle_run_event,
    import_check,
    is_transient_error,
    limit_text,
    poll_run,
    push_run_reference,
    run_check,
    run_result,
    safe_hook_settings,
    sensor_deadline,
    wait_deadline,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class QuamotionTestRunSensor(QuamotionTaskMixin, BaseSensorOperator):
    """Wait until a Quamotion Cloud test run finishes; fail with a per-job summary when it did not pass.

    Succeeds, returning the run's summary ``{"test_run_id", "state", "job_count"}`` (the same in every
    mode), when every job succeeded (or was skipped, with ``allow_skipped``). Fails with ``AirflowFailException`` when the run finished
    otherwise, so Airflow does not retry a finished failure. Transient API errors are retried by the
    transport; a transient failure left after the retries (429, 5xx, a dropped connection, a timeout)
    is "not yet" (the sensor pokes again until its ``timeout``); a permanent one (401/403, 404, other
    4xx) fails the poke.

    In deferrable mode the sensor polls once in the worker first: a run that already finished is
    reported at once, without a trip through the triggerer.

    :param test_run_id: the run to wait on (templated).
    :param allow_skipped: count ``skipped`` jobs as passed.
    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: non-secret overrides of the connection's settings (``timeout``, ``project``...).
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    :param follow_logs: show the jobs' new log lines in the task log: each poke follows the live logs
        for up to :data:`~airflow_provider_quamotion.logs.POKE_FOLLOW_SECONDS` (a reschedule sensor
        keeps what it showed in the task state store); deferred, the trigger follows them between
        its polls. ``False`` shows none.
    :param log_budget_bytes: the most bytes of job log lines shown (all jobs together); past it one
        "truncated" line is written.
    :param kwargs: ``poke_interval``, ``timeout``, ``mode`` and the rest of ``BaseSensorOperator``.
    """

    template_fields = ("test_run_id", "quamotion_conn_id")
    #: The job logs shown so far (made at the first poke).
    _job_logs: JobLogFollower | None = None
    #: The wait's absolute deadline, passed to every poll (set when the task starts).
    _wait_deadline: float | None = None
    operator_extra_links = (QuamotionTestRunLink(),)
    ui_color = "#d9ecf5"

    def __init__(
        self,
        *,
        test_run_id: str,
        allow_skipped: bool = False,
        deferrable: bool | None = None,
        quamotion_conn_id: str = DEFAULT_CONN_ID,
        hook_params: Mapping[str, Any] | None = None,
        hook_settings: Mapping[str, Any] | None = None,
        follow_logs: bool = True,
        log_budget_bytes: int = DEFAULT_LOG_BUDGET_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.test_run_id = test_run_id
        self.allow_skipped = allow_skipped
        self.follow_logs = bool(follow_logs)
        self.log_budget_bytes = check_log_budget(log_budget_bytes)
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id,
            hook_params=hook_params,
            hook_settings=hook_settings,
            deferrable=deferrable,
        )

    def execute(self, context: Context) -> Any:
        """Poke/reschedule as any sensor, or (deferrable) check once, then defer to the trigger."""
        push_run_reference(context, self.hook, str(self.test_run_id))
        if not self.deferrable:
            self._wait_deadline = sensor_deadline(self, context)
            return super().execute(context)
        deadline, _ = wait_deadline(self.timeout, self.execution_timeout)
        self._wait_deadline = deadline
        first = self.poke(context)  # a finished run is reported now, with no trip through the triggerer
        if isinstance(first, PokeReturnValue) and first.is_done:
            return first.xcom_value
        from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger

        self.defer(
            trigger=QuamotionTestRunTrigger(
                test_run_id=str(self.test_run_id),
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

    def _logs(self, context: Context) -> JobLogFollower:
        if self._job_logs is None:
            store = context.get("task_state_store") if self.reschedule else None
            self._job_logs = JobLogFollower(
                self.log, enabled=self.follow_logs, budget_bytes=self.log_budget_bytes, store=store
            )
        return self._job_logs

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """One poll: done when the run passed; ``AirflowFailException`` when it finished otherwise."""
        test_run_id = str(self.test_run_id)
        try:
            state, jobs = poll_run(self.hook, test_run_id, self.allow_skipped, self._wait_deadline)
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
        if state.is_terminal:
            self._logs(context).finish(self.hook, jobs, self._wait_deadline)  # the jobs' last lines
        elif not self.deferrable:  # a deferrable sensor's first poke defers at once
            self._logs(context).follow_for(
                self.hook, jobs, min(POKE_FOLLOW_SECONDS, self.poke_interval), self._wait_deadline
            )
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


class QuamotionSensor(QuamotionTaskMixin, BaseSensorOperator):
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
    :param quamotion_conn_id: the Airflow connection ID (templated).
    :param hook_params: non-secret overrides of the connection's settings.
    :param hook_settings: deprecated name of ``hook_params`` (one release, with a warning).
    :param max_event_bytes: in deferrable mode with a callable check, the largest reply handed from the
        triggerer to the worker; a larger one fails the task with a message saying what to do.
    :param kwargs: ``poke_interval``, ``timeout``, ``mode`` and the rest of ``BaseSensorOperator``.
    """

    template_fields = ("endpoint", "query_params", "quamotion_conn_id")
    #: The wait's absolute deadline, passed to every poll (set when the task starts).
    _wait_deadline: float | None = None
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
        hook_params: Mapping[str, Any] | None = None,
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
        self.max_event_bytes = max_event_bytes
        self.init_quamotion(
            quamotion_conn_id=quamotion_conn_id,
            hook_params=hook_params,
            hook_settings=hook_settings,
            deferrable=deferrable,
        )

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
            params = check_mapping("query_params", self.query_params)
            wait_deadline = self._wait_deadline
            response = self.hook.request(
                self.method, self.endpoint, params=params, stream=True, deadline=wait_deadline
            )
            # the body is read within a byte budget; the connection's timeout (and the wait's
            # deadline) bound all of it
            read_deadline = time.time() + self.hook.settings.timeout
            body = read_json_or_text(
                response,
                max_bytes=MAX_BODY_BYTES,
                deadline=read_deadline if wait_deadline is None else min(read_deadline, wait_deadline),
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
            self._wait_deadline = sensor_deadline(self, context)
            return super().execute(context)
        if isinstance(self.response_check, str):
            import_check(self.response_check)  # fail now, in the worker, for a bad path
        deadline, _ = wait_deadline(self.timeout, self.execution_timeout)
        self._defer(deadline, first_delay=0.0)

    def _defer(self, deadline: float | None, first_delay: float) -> None:
        from airflow_provider_quamotion.triggers.quamotion import QuamotionHttpTrigger

        params = check_mapping("query_params", self.query_params)
        self.defer(
            trigger=QuamotionHttpTrigger(
                endpoint=self.endpoint,
                quamotion_conn_id=self.quamotion_conn_id,
                method=self.method,
                params=dict(params) if params else None,
                not_found_ok=self.not_found_ok,
                response_check_path=self.response_check if isinstance(self.response_check, str) else None,
                poll_interval=self.poke_interval or 1.0,
                deadline=deadline,
                hook_settings=safe_hook_settings(self.hook_params),
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
