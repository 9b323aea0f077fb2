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


def test_a_failure_names_each_job_once_with_its_earlier_attempts() -> None:
    from airflow_provider_quamotion import api
    from airflow_provider_quamotion.runs import format_run_failure

    # captured shapes: a device's job canceled and re-run (57817290 -> 57818907), another device failing
    jobs = [
        {"id": 57818907, "name": "4a7cf261", "status": "failed", "started": "2018-03-16T13:23:18.494Z"},
        {"id": 57817290, "name": "4a7cf261", "status": "canceled", "started": "2018-03-16T13:16:57.741Z"},
        {"id": 57819619, "name": "3ca42f69", "status": "success", "started": "2018-03-16T13:27:39.562Z"},
    ]
    message = format_run_failure("run-1", jobs)
    assert "1 of 2 job(s) did not succeed:" in message
    assert "job 57818907 on device 4a7cf261: failed (attempt 2; earlier: 57817290 canceled)" in message
    assert "truncated" not in message
    # the same from a trigger event: the summary and the count of listed records agree
    assert format_run_failure("run-1", api.summarize_jobs(jobs), len(jobs)) == message
    # a summary cut short says so
    assert "(summary truncated)" in format_run_failure("run-1", api.summarize_jobs(jobs, limit=1), len(jobs))
