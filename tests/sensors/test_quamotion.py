"""Unit tests of the sensors with requests-mock: poke outcomes, deferral, events, deadlines."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
import requests
import requests_mock as rm
from airflow.sdk import PokeReturnValue

from airflow_provider_quamotion.compat import AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionNotFoundError
from airflow_provider_quamotion.sensors.quamotion import (
    DEFER_GRACE_SECONDS,
    QuamotionSensor,
    QuamotionTestRunSensor,
    format_run_failure,
    wait_deadline,
)
from airflow_provider_quamotion.triggers.quamotion import QuamotionHttpTrigger, QuamotionTestRunTrigger
from tests.mocks import HOST, mock_aad, mock_projects

JOBS_URL = f"{HOST}/project/acme/api/testRun/run-1/jobs"
FAST = {"retry": {"max_attempts": 3, "backoff_initial": 0.0, "backoff_max": 0.0}}


pytestmark = pytest.mark.usefixtures("mocked_connection")


@pytest.fixture
def api() -> Any:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        yield m


class FakeTI:
    def __init__(self) -> None:
        self.xcom: dict[str, Any] = {}
        self.task_id = "wait"
        self.try_number = 1

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def jobs(*statuses: str) -> list[dict[str, Any]]:
    return [{"id": 100 + i, "name": f"device-{i}", "status": s} for i, s in enumerate(statuses)]


def sensor(**kwargs: Any) -> QuamotionTestRunSensor:
    kwargs.setdefault("hook_params", {})
    return QuamotionTestRunSensor(task_id="wait", test_run_id="run-1", poke_interval=1, **kwargs)


# --- QuamotionTestRunSensor, poke --------------------------------------------------------------------


def test_poke_follows_the_run_state(api: rm.Mocker) -> None:
    api.get(
        JOBS_URL, [{"json": []}, {"json": jobs("pending", "success")}, {"json": jobs("success", "success")}]
    )
    s = sensor()
    assert s.poke({}) is False  # queued
    assert s.poke({}) is False  # running
    done = s.poke({})
    assert isinstance(done, PokeReturnValue) and done.is_done
    assert done.xcom_value == {"test_run_id": "run-1", "state": "success", "job_count": 2}


def test_poke_fails_a_finished_failure_with_a_per_job_summary(api: rm.Mocker) -> None:
    api.get(JOBS_URL, json=jobs("success", "failed", "canceled"))
    with pytest.raises(AirflowFailException) as err:
        sensor().poke({})
    text = str(err.value)
    assert "2 of 3 job(s) did not succeed" in text
    assert "job 101 on device device-1: failed" in text
    assert "job 102 on device device-2: canceled" in text
    assert "job 100" not in text


def test_allow_skipped(api: rm.Mocker) -> None:
    api.get(JOBS_URL, json=jobs("success", "skipped"))
    assert sensor(allow_skipped=True).poke({})
    with pytest.raises(AirflowFailException):
        sensor().poke({})


def test_transient_errors_are_retried_not_fatal(api: rm.Mocker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", lambda s: None)
    api.get(JOBS_URL, [{"status_code": 503}, {"status_code": 502}, {"json": jobs("success")}])
    assert sensor(hook_params=FAST).poke({})
    assert api.call_count >= 3


def test_a_transient_failure_left_after_the_retries_is_not_yet(
    api: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outage outlasting the transport's retries does not fail the sensor: it pokes again later."""
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", lambda s: None)
    s = sensor(hook_params=FAST)
    api.get(JOBS_URL, status_code=503)
    assert s.poke({}) is False
    api.get(JOBS_URL, status_code=429)
    assert s.poke({}) is False
    api.get(JOBS_URL, exc=requests.exceptions.ConnectionError("connection dropped"))
    assert s.poke({}) is False
    api.get(JOBS_URL, exc=requests.exceptions.ReadTimeout("read timed out"))
    assert s.poke({}) is False
    api.get(JOBS_URL, json=jobs("success"))
    assert s.poke({})


@pytest.mark.parametrize(
    ("status", "error"), [(400, QuamotionError), (403, QuamotionError), (404, QuamotionNotFoundError)]
)
def test_a_permanent_failure_fails_the_poke(
    api: rm.Mocker, monkeypatch: pytest.MonkeyPatch, status: int, error: type[Exception]
) -> None:
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", lambda s: None)
    api.get(JOBS_URL, status_code=status, json={"error": "nope"})
    with pytest.raises(error, match=str(status)):
        sensor(hook_params=FAST).poke({})


def test_poke_mode_runs_to_success_through_execute(api: rm.Mocker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.sleep", lambda s: None)
    api.get(JOBS_URL, [{"json": []}, {"json": jobs("running")}, {"json": jobs("success")}])
    ti = FakeTI()
    result = sensor(deferrable=False, timeout=60).execute({"ti": ti})  # type: ignore[arg-type]
    assert result["state"] == "success"
    assert ti.xcom["test_run_id"] == "run-1"
    assert ti.xcom["test_run_url"] == f"{HOST}/project/acme/testRun/run-1"


# --- deferral --------------------------------------------------------------------------------------


def test_deferrable_defers_with_an_absolute_deadline(api: rm.Mocker) -> None:
    api.get(JOBS_URL, json=jobs("pending", "success"))
    s = sensor(deferrable=True, timeout=300, execution_timeout=timedelta(seconds=120), allow_skipped=True)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        s.execute({"ti": FakeTI()})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, QuamotionTestRunTrigger)
    assert trigger.allow_skipped is True
    assert before + 120 <= trigger.deadline <= time.time() + 120  # execution_timeout is the nearer
    assert deferred.value.method_name == "execute_complete"
    assert 120 < deferred.value.timeout.total_seconds() <= 120 + DEFER_GRACE_SECONDS
    polls = [r for r in api.request_history if r.url.endswith("/jobs")]
    assert len(polls) == 1  # one check in the worker, then the trigger polls


def test_deferrable_finished_run_returns_without_deferring(api: rm.Mocker) -> None:
    """A run that already passed costs no trip through the triggerer: no TaskDeferred, its summary."""
    api.get(JOBS_URL, json=jobs("success", "success"))
    result = sensor(deferrable=True, timeout=300).execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert result == {"test_run_id": "run-1", "state": "success", "job_count": 2}


def test_deferrable_finished_failure_fails_without_deferring(api: rm.Mocker) -> None:
    api.get(JOBS_URL, json=jobs("success", "failed"))
    with pytest.raises(AirflowFailException, match="1 of 2"):
        sensor(deferrable=True, timeout=300).execute({"ti": FakeTI()})  # type: ignore[arg-type]


def test_deferrable_transient_first_check_still_defers(
    api: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", lambda s: None)
    api.get(JOBS_URL, status_code=503)
    with pytest.raises(TaskDeferred):
        sensor(deferrable=True, timeout=300, hook_params=FAST).execute({"ti": FakeTI()})  # type: ignore[arg-type]


def test_default_deferrable_comes_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert sensor().deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert sensor().deferrable is False


def test_deferrable_refuses_secret_hook_settings() -> None:
    with pytest.raises(QuamotionError, match="connection"):
        sensor(deferrable=True, hook_params={"client_secret": "x"})


def test_execute_complete_outcomes() -> None:
    s = sensor(timeout=30)
    ok = {"status": "success", "test_run_id": "run-1", "state": "success", "jobs": [], "job_count": 2}
    assert s.execute_complete({}, ok) == {"test_run_id": "run-1", "state": "success", "job_count": 2}
    failed = {
        **ok,
        "status": "failed",
        "jobs": [{"id": 7, "device": "d", "status": "failed"}],
        "job_count": 9,
    }
    with pytest.raises(AirflowFailException, match=r"1 of 9 job\(s\).*summary truncated.*job 7 on device d"):
        s.execute_complete({}, failed)
    timeout = {**ok, "status": "timeout", "message": "did not finish before the deadline."}
    with pytest.raises(AirflowSensorTimeout, match="Limit: the sensor's timeout of 30 s"):
        s.execute_complete({}, timeout)
    with pytest.raises(QuamotionError, match="HTTP 403"):
        s.execute_complete({}, {**ok, "status": "error", "message": "HTTP 403"})


def test_wait_deadline_picks_the_nearer_limit() -> None:
    assert wait_deadline(None, None) == (None, "")
    assert wait_deadline(10, timedelta(seconds=5), now=100) == (105, "execution_timeout of 5 s")
    assert wait_deadline(10, None, now=100) == (110, "timeout of 10 s")


def test_failure_summary_is_bounded() -> None:
    many = [{"id": i, "device": f"d{i}", "status": "failed"} for i in range(100)]
    text = format_run_failure("r", many)
    assert "and 80 more" in text
    assert len(text) < 2000


# --- QuamotionSensor (generic) ------------------------------------------------------------------------

GROUPS_URL = f"{HOST}/project/acme/api/deviceGroup"


def has_groups(body: Any) -> Any:
    return PokeReturnValue(bool(body), len(body or []))


def generic(**kwargs: Any) -> QuamotionSensor:
    kwargs.setdefault("endpoint", "deviceGroup")
    return QuamotionSensor(task_id="generic", poke_interval=2, **kwargs)


def test_generic_poke_default_check_is_any_2xx(api: rm.Mocker) -> None:
    api.get(GROUPS_URL, text="not json")
    assert generic().poke({})


def test_generic_poke_with_callable_and_dotted_checks(api: rm.Mocker) -> None:
    api.get(GROUPS_URL, [{"json": []}, {"json": [{"a": 1}]}, {"json": [{"a": 1}, {"b": 2}]}])
    s = generic(response_check=has_groups, query_params={"q": "x"})
    assert not s.poke({})
    done = s.poke({})
    assert done and done.xcom_value == 1
    assert api.last_request.qs == {"q": ["x"]}
    assert generic(response_check=f"{__name__}.has_groups").poke({}).xcom_value == 2


def test_generic_404_is_not_yet_only_when_told(api: rm.Mocker) -> None:
    api.get(GROUPS_URL, status_code=404, json={"error": "not_found"})
    assert generic(not_found_ok=True).poke({}) is False
    with pytest.raises(QuamotionNotFoundError):
        generic().poke({})


def test_generic_transient_failures_are_not_yet_permanent_ones_fail(
    api: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("airflow_provider_quamotion.transport.policy.time.sleep", lambda s: None)
    api.get(GROUPS_URL, status_code=502)
    assert generic(hook_params=FAST).poke({}) is False
    api.get(GROUPS_URL, exc=requests.exceptions.ConnectionError("connection dropped"))
    assert generic(hook_params=FAST).poke({}) is False
    api.get(GROUPS_URL, status_code=400, json={"error": "bad"})
    with pytest.raises(QuamotionError, match="400"):
        generic(hook_params=FAST).poke({})


def test_generic_deferrable_ships_no_callable() -> None:
    with pytest.raises(TaskDeferred) as deferred:
        generic(response_check=has_groups, deferrable=True, timeout=60).execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, QuamotionHttpTrigger)
    assert trigger.response_check_path is None
    assert "has_groups" not in repr(trigger.serialize())
    with pytest.raises(TaskDeferred) as deferred:
        generic(response_check=f"{__name__}.has_groups", deferrable=True).execute({})  # type: ignore[arg-type]
    assert deferred.value.trigger.response_check_path == f"{__name__}.has_groups"


def test_generic_bad_dotted_path_fails_in_the_worker() -> None:
    with pytest.raises(QuamotionError, match="cannot be imported"):
        generic(response_check="nope.nothing", deferrable=True).execute({})  # type: ignore[arg-type]


def test_generic_execute_complete_judges_and_redefers_with_the_same_deadline() -> None:
    s = generic(response_check=has_groups, deferrable=True, timeout=60)
    deadline = time.time() + 50
    base = {"status": "success", "checked": False, "xcom_value": None, "deadline": deadline, "message": ""}
    assert s.execute_complete({}, {**base, "body": [{"a": 1}]}) == 1
    with pytest.raises(TaskDeferred) as deferred:
        s.execute_complete({}, {**base, "body": []})
    assert deferred.value.trigger.deadline == deadline
    assert deferred.value.trigger.first_delay == 2  # poke_interval: no busy loop worker <-> triggerer
    with pytest.raises(AirflowSensorTimeout, match="still false at the deadline"):
        s.execute_complete({}, {**base, "body": [], "deadline": time.time() - 1})
    assert s.execute_complete({}, {**base, "checked": True, "xcom_value": {"n": 3}}) == {"n": 3}
    with pytest.raises(AirflowSensorTimeout, match="sensor's timeout of 60 s"):
        s.execute_complete({}, {**base, "status": "timeout", "message": "not ready."})
    with pytest.raises(QuamotionError, match="too big"):
        s.execute_complete({}, {**base, "status": "error", "message": "too big"})


def test_deferrable_link_needs_no_token_and_no_project_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the project named in the connection, the worker builds the link from the settings alone."""
    from tests.mocks import connection_json

    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(project="acme"))
    ti = FakeTI()
    s = sensor(deferrable=True, timeout=300)
    monkeypatch.setattr(s, "poke", lambda context: False)  # the one check before deferring is not the link
    with rm.Mocker() as m:  # any request (Azure AD, /api/project) fails the test
        with pytest.raises(TaskDeferred):
            s.execute({"ti": ti})  # type: ignore[arg-type]
        assert m.request_history == []
    assert ti.xcom == {"test_run_id": "run-1", "test_run_url": f"{HOST}/project/acme/testRun/run-1"}


# --- the wait's deadline bounds every poll ---------------------------------------------------------


def test_a_poke_never_outlives_the_sensor_timeout_through_its_retries(api: rm.Mocker) -> None:
    # every poll answers 503 "retry in 1 s": without the wait's deadline one poke would spend all
    # ten of the transport's attempts (~9 s) before the 1.5 s timeout is even looked at
    api.get(JOBS_URL, status_code=503, headers={"Retry-After": "1"})
    with pytest.raises(AirflowSensorTimeout):
        QuamotionTestRunSensor(
            task_id="wait", test_run_id="run-1", poke_interval=0.5, timeout=1.5, deferrable=False
        ).execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert api.request_history[-1].url == JOBS_URL
    assert sum(1 for r in api.request_history if r.url == JOBS_URL) <= 3


def test_the_generic_poke_passes_the_wait_deadline_too(api: rm.Mocker) -> None:
    url = f"{HOST}/project/acme/api/deviceGroup"
    api.get(url, status_code=503, headers={"Retry-After": "1"})
    with pytest.raises(AirflowSensorTimeout):
        QuamotionSensor(
            task_id="wait", endpoint="deviceGroup", poke_interval=0.5, timeout=1.5, deferrable=False
        ).execute({"ti": FakeTI()})  # type: ignore[arg-type]
    assert sum(1 for r in api.request_history if r.url == url) <= 3


def test_a_rescheduled_sensor_counts_from_its_first_reschedule() -> None:
    from datetime import datetime, timezone

    from airflow_provider_quamotion.runs import sensor_deadline

    first = datetime(2026, 1, 1, tzinfo=timezone.utc)

    class RescheduledTI(FakeTI):
        def get_first_reschedule_date(self, context: Any) -> datetime:
            return first

    s = QuamotionTestRunSensor(
        task_id="wait", test_run_id="r", mode="reschedule", timeout=600, deferrable=False
    )
    assert sensor_deadline(s, {"ti": RescheduledTI()}) == first.timestamp() + 600
    first = datetime.now(timezone.utc) - timedelta(seconds=10)  # started 10 s ago, 590 s left...
    s.execution_timeout = timedelta(seconds=60)  # ...but this try may run 60 s only
    before = time.time()
    deadline = sensor_deadline(s, {"ti": RescheduledTI()})
    assert deadline is not None and before + 60 <= deadline <= time.time() + 60
