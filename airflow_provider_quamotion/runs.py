"""What waiting on Quamotion Cloud needs, shared by the operators, the sensors and the triggers.

Deadlines (:func:`wait_deadline`, :func:`defer_timeout`), trigger events and their outcome
(:func:`handle_run_event`), run summaries (:func:`run_result`, :func:`format_run_failure`), the
transient-error rule (:func:`is_transient_error`), and the checks of ``hook_params`` done at DAG-parse
time (:func:`check_hook_params`, :func:`safe_hook_settings`).

Data flows one way: the hook and the API's shape below, then this module, then the operators, sensors
and triggers. This module imports neither ``airflow.triggers.base`` nor any operator, sensor or trigger
module, and nothing heavy at import time (the hook, the settings and the transport load on first use).
"""

from __future__ import annotations

import ast
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.compat import AirflowFailException, AirflowSensorTimeout
from airflow_provider_quamotion.exceptions import QuamotionConfigError, QuamotionError, QuamotionNotFoundError

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

DEFAULT_CONN_ID = "quamotion_default"

#: The largest JSON body (bytes) the HTTP trigger puts into an event.
MAX_EVENT_BYTES = 64 * 1024


#: Hook settings a trigger may carry: none of them is a secret.
SAFE_HOOK_SETTINGS = frozenset(
    {
        "base_url",
        "tenant_id",
        "authority_host",
        "resource",
        "project",
        "verify",
        "timeout",
        "retry",
        "scheduled_timezone",
    }
)

_SECRET_SETTINGS = frozenset({"client_secret", "api_key", "password", "token", "proxies"})


STATUS_SUCCESS = "success"

STATUS_FAILED = "failed"

STATUS_TIMEOUT = "timeout"

STATUS_ERROR = "error"


#: Extra seconds given to Airflow's own deferral timeout past the trigger's deadline, so the trigger's
#: clear timeout event normally arrives first; Airflow's timeout is the backstop.
DEFER_GRACE_SECONDS = 60.0


# --- hook_params: checked at DAG-parse time, carried into triggers -----------------------------------


def safe_hook_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The hook overrides a trigger may carry in ``serialize()``: non-secret settings, JSON-safe.

    A ``RetryPolicy`` becomes a plain dict (rebuilt by :func:`hook_overrides`).

    :param settings: the hook overrides given to a sensor or operator (``hook_params=``).
    :raises QuamotionConfigError: for a secret (``client_secret``, ``api_key``, proxies that may hold
        credentials) or an unknown setting: those belong in the connection, which the trigger reads.
    """
    out: dict[str, Any] = {}
    for name, value in (settings or {}).items():
        if name in _SECRET_SETTINGS:
            raise QuamotionConfigError(
                f"hook_params[{name!r}] cannot be passed to a deferrable task: trigger arguments are "
                "stored in Airflow's database. Put it in the connection instead."
            )
        if name not in SAFE_HOOK_SETTINGS:
            raise QuamotionConfigError(
                f"Unknown hook setting {name!r} for a trigger; allowed: {', '.join(sorted(SAFE_HOOK_SETTINGS))}."
            )
        if value is None:
            continue
        if name == "retry" and not isinstance(value, Mapping):
            fields = getattr(value, "__dataclass_fields__", {})
            value = {f: getattr(value, f) for f in fields}
        if name == "retry":
            value = {k: sorted(v) if isinstance(v, frozenset | set) else v for k, v in dict(value).items()}
        out[name] = value
    return out


def hook_overrides(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The inverse of :func:`safe_hook_settings`: keyword arguments for a hook."""
    out = dict(settings or {})
    if isinstance(out.get("retry"), Mapping):
        from airflow_provider_quamotion.settings import RetryPolicy

        retry = dict(out["retry"])
        if "retry_statuses" in retry:
            retry["retry_statuses"] = frozenset(int(s) for s in retry["retry_statuses"])
        out["retry"] = RetryPolicy(**retry)
    return out


def rendered_dict_error(name: str, value: str) -> QuamotionConfigError | None:
    """The error for a dict that Jinja rendered to a string, or ``None`` when ``value`` is not one.

    Without ``render_template_as_native_obj=True`` on the DAG, a template that yields a dict
    (``"{{ var.json.x }}"``, ``"{{ ti.xcom_pull(...) }}"``) reaches the task as the string
    ``"{'a': 1}"``. Such a string is recognised (it parses as a dict literal or JSON object) and the
    message says how to fix it.

    :param name: the argument's name (for the message).
    :param value: the rendered value.
    """
    text = value.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        import json

        try:
            parsed = json.loads(text)
        except ValueError:
            return None
    if not isinstance(parsed, Mapping):
        return None
    return QuamotionConfigError(
        f"{name} is the string {_short(text)!r}: a dict that Jinja rendered to text. Set "
        "render_template_as_native_obj=True on the DAG so templates render to Python objects, or pass "
        f"{name} as a dict (or, where a name is accepted, as a name)."
    )


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_mapping(name: str, value: Any) -> Mapping[str, Any] | None:
    """``value`` when it is a mapping or ``None``; a clear error for a rendered dict or another type.

    :raises QuamotionConfigError: a string (a rendered dict, or any other text) or a non-mapping.
    """
    if value is None or isinstance(value, Mapping):
        return value
    if isinstance(value, str):
        err = rendered_dict_error(name, value)
        if err is not None:
            raise err
    raise QuamotionConfigError(f"{name} must be a dict, not {type(value).__name__} {_short(repr(value))}.")


def renamed_argument(
    old_name: str,
    old_value: Any,
    new_name: str,
    new_value: Any,
    *,
    stacklevel: int = 3,
    refuse_both: bool = True,
) -> Any:
    """The value of an argument renamed in this release: the new name's, or the old one's with a warning.

    The one rule for every deprecated argument name of the operators and sensors (accepted for one
    release with an ``AirflowProviderDeprecationWarning``).

    :param old_name: the deprecated name (``hook_settings``).
    :param old_value: what was passed under it (``None``: not passed).
    :param new_name: the name to use instead (``hook_params``).
    :param new_value: what was passed under the new name.
    :param stacklevel: the warning's stack level, counted from the caller of this function.
    :param refuse_both: refuse both names at once (``False`` where the new name has a non-``None``
        default, so "passed" cannot be told from "defaulted").
    :raises QuamotionConfigError: both names were given.
    """
    if old_value is None:
        return new_value
    import warnings

    from airflow.exceptions import AirflowProviderDeprecationWarning

    if refuse_both and new_value is not None:
        raise QuamotionConfigError(f"Pass {new_name}= only ({old_name}= is its deprecated name).")
    warnings.warn(
        f"{old_name}= is deprecated and will be removed in the next release; use {new_name}=.",
        AirflowProviderDeprecationWarning,
        stacklevel=stacklevel,
    )
    return old_value


def check_hook_params(
    hook_params: Mapping[str, Any] | None,
    *,
    deferrable: bool = False,
    hook_settings: Mapping[str, Any] | None = None,
    stacklevel: int = 3,
) -> dict[str, Any]:
    """``hook_params`` as a dict, checked at DAG-parse time (no network, no heavy import).

    Every Quamotion operator and sensor runs this in ``__init__``: the names must be connection
    settings, and a task that may defer may carry only the non-secret ones (:func:`safe_hook_settings`:
    trigger arguments are stored in Airflow's database).

    :param hook_params: overrides of the connection's settings (``{"timeout": 30}``...).
    :param deferrable: the task may defer (its overrides then travel to the triggerer).
    :param hook_settings: the former name of ``hook_params``, accepted for one release with an
        ``AirflowProviderDeprecationWarning``.
    :raises QuamotionConfigError: for a name that is not a connection setting, a secret in a deferrable
        task, both names given, or a string (a dict rendered by Jinja).
    """
    hook_params = renamed_argument(
        "hook_settings", hook_settings, "hook_params", hook_params, stacklevel=stacklevel + 1
    )
    from airflow_provider_quamotion.settings import QuamotionSettings

    settings = dict(check_mapping("hook_params", hook_params) or {})
    unknown = sorted(set(settings) - set(QuamotionSettings.__dataclass_fields__))
    if unknown:
        raise QuamotionConfigError(
            f"Unknown hook setting(s) {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(QuamotionSettings.__dataclass_fields__)}."
        )
    if deferrable:
        safe_hook_settings(settings)
    return settings


def check_hook_settings(hook_settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`check_hook_params` without the deferrable check (kept for callers of 0.x)."""
    return check_hook_params(hook_settings)


# --- errors, deadlines, events, summaries ------------------------------------------------------------


def is_transient_error(err: BaseException, retry_statuses: Collection[int] | None = None) -> bool:
    """Whether a failure left after the transport's retries may go away by itself (poll again later).

    Transient: a retryable status (429, 5xx of the retry policy), a dropped connection or a timeout
    (no status; a certificate failure excepted), a deadline reached inside the transport. Permanent:
    401/403 after renewal, 404 (an unknown run or project), other 4xx, a reply that is not JSON, a
    configuration or certificate problem.

    :param err: the error a poll raised.
    :param retry_statuses: the statuses the retry policy retries (default: the default policy's).
    """
    from airflow_provider_quamotion.exceptions import (
        QuamotionApiError,
        QuamotionAuthError,
        QuamotionRateLimitedError,
        QuamotionResponseError,
        QuamotionTimeoutError,
    )

    if isinstance(err, QuamotionTimeoutError | QuamotionRateLimitedError):
        return True
    if isinstance(err, QuamotionAuthError):
        return err.transient  # the token service was down; a refused credential is permanent
    if not isinstance(err, QuamotionApiError) or isinstance(
        err, QuamotionNotFoundError | QuamotionResponseError
    ):
        return False
    if err.status is None:
        from airflow_provider_quamotion.transport.policy import is_certificate_failure

        return not is_certificate_failure(err)
    if retry_statuses is None:
        from airflow_provider_quamotion.settings import RetryPolicy

        retry_statuses = RetryPolicy().retry_statuses
    return err.status in retry_statuses


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` (``False`` when unset)."""
    from airflow_provider_quamotion.compat import conf

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


def sensor_deadline(sensor: Any, context: Mapping[str, Any]) -> float | None:
    """The absolute deadline (epoch seconds) of a poke or reschedule sensor's whole wait.

    Its start (in reschedule mode the first reschedule's date, as Airflow counts it) plus its
    ``timeout`` and bounded by ``execution_timeout``; each poll passes it to the transport, so a poll
    (its retries included) never outlives the sensor's ``timeout`` by more than one poll interval.

    :param sensor: the sensor (its ``timeout``, ``execution_timeout`` and ``reschedule``).
    :param context: the task's context (its ``ti``, for the first reschedule's date).
    """
    start = time.time()
    if getattr(sensor, "reschedule", False):
        ti: Any = context.get("ti")
        first = ti.get_first_reschedule_date(context) if hasattr(ti, "get_first_reschedule_date") else None
        if first is not None:
            start = first.timestamp()
    deadline, _ = wait_deadline(getattr(sensor, "timeout", None), None, now=start)
    limit, _ = wait_deadline(None, getattr(sensor, "execution_timeout", None))
    candidates = [d for d in (deadline, limit) if d is not None]
    return min(candidates) if candidates else None


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

    One entry per job: its latest attempt (the one that decides), naming the earlier attempts of a
    retried job (``job 57818907 on device ...: failed (attempt 2; earlier: 57817290 canceled)``).

    :param test_run_id: the run.
    :param jobs: its jobs as listed (every attempt), or their summary
        (:func:`~airflow_provider_quamotion.api.summarize_jobs`: ``id``, ``device``, ``status``,
        ``attempt``, ``earlier``).
    :param job_count: the number of job records listed (attempts included) when ``jobs`` is a
        truncated summary.
    """
    listed = len(jobs)
    summary = jobs if jobs and all("device" in j for j in jobs) else api.summarize_jobs(jobs, limit=listed)
    # how many listed records the summary stands for (a retried job's entry stands for its attempts)
    covered = sum(int(j.get("attempt") or 1) for j in summary)
    records = job_count if job_count is not None else (covered if summary is jobs else listed)
    missing = max(0, records - covered)
    total = len(summary) + missing
    bad = [j for j in summary if j.get("status") != api.JobStatus.SUCCESS.value]
    shown = "; ".join(
        f"job {j.get('id')} on device {j.get('device')}: {j.get('status')}{_attempts(j)}" for j in bad[:20]
    )
    more = f"; and {len(bad) - 20} more" if len(bad) > 20 else ""
    truncated = " (summary truncated)" if missing else ""
    return (
        f"Quamotion test run {test_run_id} finished and did not pass: {len(bad)} of {total} job(s) did not "
        f"succeed{truncated}: {shown}{more}."
    )


def _attempts(job: Mapping[str, Any]) -> str:
    earlier = job.get("earlier") or []
    if not job.get("attempt") or not earlier:
        return ""
    named = ", ".join(f"{e.get('id')} {e.get('status')}" for e in earlier)
    return f" (attempt {job['attempt']}; earlier: {named})"


def format_run_success(test_run_id: str, job_count: int) -> str:
    """A log line for a run that passed."""
    return f"Quamotion test run {test_run_id} passed ({job_count} job(s))."


def poll_failure(err: BaseException, previous: str | None) -> str:
    """How a wait reports its last failed poll: ``err``, unless it is only the deadline passing
    before a poll could be sent, in which case the earlier failure (the real reason) is kept."""
    from airflow_provider_quamotion.exceptions import QuamotionTimeoutError

    if isinstance(err, QuamotionTimeoutError) and previous:
        return previous
    return f"{type(err).__name__}: {err}"


def poll_run(
    hook: QuamotionHook, test_run_id: str, allow_skipped: bool, deadline: float | None = None
) -> tuple[api.TestRunState, list[Any]]:
    """One poll of a run: its state and jobs (transient errors are retried by the transport).

    :param deadline: the wait's absolute deadline: the poll's retries and timeouts stay within it.
    """
    jobs = hook.list_jobs(test_run_id, deadline=deadline)
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


def push_run_reference(context: Context, hook: QuamotionHook, test_run_id: str) -> None:
    """Push the run's id and portal URL to XCom (the extra link reads them; no API call to render it)."""
    from airflow_provider_quamotion.links.quamotion import (
        TEST_RUN_ID_KEY,
        TEST_RUN_URL_KEY,
        known_test_run_url,
        test_run_url,
    )

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


def import_check(path: str) -> Any:
    """Import a check given as ``"package.module.function"``.

    :raises QuamotionConfigError: when it cannot be imported or is not callable.
    """
    from airflow_provider_quamotion.compat import import_string

    try:
        check = import_string(path)
    except (ImportError, ValueError) as err:
        raise QuamotionConfigError(
            f"response_check {path!r} cannot be imported ({err}); give the dotted path of a function "
            "importable in the triggerer and the worker, e.g. 'my_company.checks.all_done'."
        ) from None
    if not callable(check):
        raise QuamotionConfigError(f"response_check {path!r} is not callable.")
    return check


def run_check(check: Any, body: Any) -> tuple[bool, Any]:
    """Run a response check; returns (verdict, XCom value). A ``PokeReturnValue`` carries both."""
    result = check(body)
    if hasattr(result, "is_done") and hasattr(result, "xcom_value"):
        return bool(result.is_done), result.xcom_value
    return bool(result), None


__all__ = [
    "DEFAULT_CONN_ID",
    "DEFER_GRACE_SECONDS",
    "MAX_EVENT_BYTES",
    "STATUS_ERROR",
    "STATUS_FAILED",
    "STATUS_SUCCESS",
    "STATUS_TIMEOUT",
    "check_hook_params",
    "check_mapping",
    "default_deferrable",
    "defer_timeout",
    "format_run_failure",
    "format_run_success",
    "handle_run_event",
    "hook_overrides",
    "import_check",
    "is_transient_error",
    "limit_text",
    "poll_run",
    "push_run_reference",
    "rendered_dict_error",
    "run_check",
    "run_result",
    "safe_hook_settings",
    "wait_deadline",
]
