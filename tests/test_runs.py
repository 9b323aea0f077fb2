"""The wait helpers shared by operators, sensors and triggers."""

from __future__ import annotations

from airflow_provider_quamotion.exceptions import QuamotionApiError, QuamotionTimeoutError
from airflow_provider_quamotion.runs import poll_failure


def test_the_deadline_passing_before_a_poll_keeps_the_real_reason() -> None:
    outage = poll_failure(QuamotionApiError("GET x failed with HTTP 502", status=502), None)
    assert outage == "QuamotionApiError: GET x failed with HTTP 502"
    late = QuamotionTimeoutError("GET x: the caller's deadline passed before the request was sent.")
    assert poll_failure(late, outage) == outage
    assert poll_failure(late, None).startswith("QuamotionTimeoutError: ")
    assert poll_failure(QuamotionApiError("HTTP 503", status=503), outage) == "QuamotionApiError: HTTP 503"


def test_scheduled_timezone_is_a_setting_a_deferrable_task_may_carry() -> None:
    from airflow_provider_quamotion.runs import check_hook_params, hook_overrides, safe_hook_settings

    params = {"scheduled_timezone": "Europe/Brussels"}
    assert check_hook_params(params, deferrable=True) == params
    assert hook_overrides(safe_hook_settings(params)) == params
