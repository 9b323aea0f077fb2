"""The API's shape: statuses, a run's state, list unwrapping, path segments."""

from __future__ import annotations

import datetime as dt

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.api import JobStatus, TestRunState, run_state_from_jobs
from tests.captured_runs import LOCAL_TIME_RUNS, SCHEDULED_VS_STARTED


def test_terminal_statuses() -> None:
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.SUCCESS,
        JobStatus.FAILED,
        JobStatus.CANCELED,
        JobStatus.SKIPPED,
    }
    assert len(JobStatus) == 11


@pytest.mark.parametrize(
    ("statuses", "allow_skipped", "state"),
    [
        ([], False, TestRunState.QUEUED),
        (["pending"], False, TestRunState.RUNNING),
        (["success", "running"], False, TestRunState.RUNNING),
        (["success", "waiting_for_resource"], False, TestRunState.RUNNING),
        (["success", "success"], False, TestRunState.SUCCESS),
        (["success", "skipped"], False, TestRunState.FAILED),
        (["success", "skipped"], True, TestRunState.SUCCESS),
        (["success", "failed"], True, TestRunState.FAILED),
        (["canceled"], False, TestRunState.FAILED),
        (["SUCCESS"], False, TestRunState.SUCCESS),
    ],
)
def test_run_state_from_jobs(statuses: list[str], allow_skipped: bool, state: TestRunState) -> None:
    jobs = [{"id": i, "status": s} for i, s in enumerate(statuses)]
    assert run_state_from_jobs(jobs, allow_skipped=allow_skipped) is state
    assert state.is_terminal == (state in (TestRunState.SUCCESS, TestRunState.FAILED))


@pytest.mark.parametrize("status", list(JobStatus))
def test_every_spelling_of_a_status_parses_alike(status: JobStatus) -> None:
    for text in (status.value, status.value.capitalize(), status.value.upper(), f" {status.value} "):
        assert JobStatus.parse(text) is status


def test_unknown_status_parse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown job status 'exploded'; known statuses: created"):
        JobStatus.parse("exploded")


# Shapes of the vendor's captured job list (QuamotionCloud.net CloudClient.Test/test_jobs.json):
# newest first; job 57817290 canceled, re-run seconds later as 57818907 under the same name, passing.
DEVICE = "4a7cf261-fa75-4a18-a564-718ebefba390"
CANCELED_THEN_PASSED = [
    {
        "id": 57818907,
        "name": DEVICE,
        "status": "success",
        "duration": 72.893276,
        "started": "2018-03-16T13:23:18.494Z",
        "commitId": "83d5b4771b785891db622005c96646754682f0b6",
        "hasArtifacts": True,
    },
    {
        "id": 57817290,
        "name": DEVICE,
        "status": "canceled",
        "duration": 369.969583,
        "started": "2018-03-16T13:16:57.741Z",
        "commitId": "83d5b4771b785891db622005c96646754682f0b6",
        "hasArtifacts": False,
    },
]


def test_canceled_then_rerun_passing_under_the_same_name_passes() -> None:
    assert run_state_from_jobs(CANCELED_THEN_PASSED) is TestRunState.SUCCESS
    assert run_state_from_jobs(list(reversed(CANCELED_THEN_PASSED))) is TestRunState.SUCCESS


def test_passed_then_rerun_failing_fails() -> None:
    jobs = [dict(CANCELED_THEN_PASSED[1], status="success"), dict(CANCELED_THEN_PASSED[0], status="failed")]
    assert run_state_from_jobs(jobs) is TestRunState.FAILED


def test_latest_attempt_is_by_started_then_id() -> None:
    same_time = "2018-03-16T13:23:18.494Z"
    jobs = [
        {"id": 10, "name": DEVICE, "status": "success", "started": same_time},
        {"id": 9, "name": DEVICE, "status": "failed", "started": same_time},
    ]
    assert run_state_from_jobs(jobs) is TestRunState.SUCCESS
    jobs[0]["id"], jobs[1]["id"] = 9, 10
    assert run_state_from_jobs(jobs) is TestRunState.FAILED
    # started wins over id: the higher id started earlier
    earlier = [
        {"id": 99, "name": DEVICE, "status": "failed", "started": "2018-03-16T13:00:00.000Z"},
        {"id": 5, "name": DEVICE, "status": "success", "started": "2018-03-16T14:00:00+00:00"},
    ]
    assert run_state_from_jobs(earlier) is TestRunState.SUCCESS


def test_a_rerun_not_started_yet_keeps_the_run_running() -> None:
    jobs = [*CANCELED_THEN_PASSED[1:], {"id": 57818907, "name": DEVICE, "status": "pending", "started": None}]
    assert run_state_from_jobs(jobs) is TestRunState.RUNNING


def test_other_devices_still_count() -> None:
    other = {"id": 57819619, "name": "3ca42f69-ff08-42b3-8d78-2ccb617e55f2", "status": "failed"}
    assert run_state_from_jobs([*CANCELED_THEN_PASSED, other]) is TestRunState.FAILED


def test_unknown_status_counts_as_not_finished_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    jobs = [
        {"id": 1, "name": "a", "status": "canceling"},
        {"id": 2, "name": "b", "status": "exploded"},
        {"id": 3, "name": "c", "status": "canceling"},
        {"id": 4, "name": "d", "status": "success"},
    ]
    with caplog.at_level("WARNING", logger="airflow_provider_quamotion.api"):
        assert run_state_from_jobs(jobs) is TestRunState.RUNNING
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "'canceling'" in warnings[0].getMessage() and "'exploded'" in warnings[0].getMessage()
    assert "not finished" in warnings[0].getMessage()


def test_unknown_status_of_an_earlier_attempt_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    jobs = [dict(CANCELED_THEN_PASSED[1], status="canceling"), CANCELED_THEN_PASSED[0]]
    with caplog.at_level("WARNING", logger="airflow_provider_quamotion.api"):
        assert run_state_from_jobs(jobs) is TestRunState.SUCCESS
    assert not caplog.records


def test_summary_names_attempts() -> None:
    failing = [
        *CANCELED_THEN_PASSED,
        {"id": 57737174, "name": "c6e1222c", "status": "failed", "started": "2018-03-16T04:52:23.969Z"},
        {"id": 57737175, "name": "c6e1222c", "status": "canceled", "started": "2018-03-16T05:52:23.969Z"},
    ]
    summary = api.summarize_jobs(failing)
    assert summary == [
        {
            "id": 57737175,
            "device": "c6e1222c",
            "status": "canceled",
            "attempt": 2,
            "earlier": [{"id": 57737174, "status": "failed"}],
        },
        {
            "id": 57818907,
            "device": DEVICE,
            "status": "success",
            "attempt": 2,
            "earlier": [{"id": 57817290, "status": "canceled"}],
        },
    ]
    single = api.summarize_jobs([{"id": 1, "name": "x", "status": "failed"}])
    assert single == [{"id": 1, "device": "x", "status": "failed"}]


def test_jobs_without_a_name_stand_alone() -> None:
    assert run_state_from_jobs([{"id": 1, "status": "success"}, {"id": 2, "status": "failed"}]) is (
        TestRunState.FAILED
    )
    assert len(api.summarize_jobs([{"id": 1, "status": "success"}, {"id": 2, "status": "failed"}])) == 2


def test_unwrap_list() -> None:
    assert api.unwrap_list([1]) == [1]
    assert api.unwrap_list({"value": [2]}) == [2]
    with pytest.raises(TypeError, match="expected a JSON array"):
        api.unwrap_list({"items": []})


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x?y", "x#y"])
def test_path_segments_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="not a valid path segment"):
        api.job(bad)


def test_paths() -> None:
    assert api.test_run_jobs("r") == "testRun/r/jobs"
    assert api.job_log(5, live=True) == "job/5/log/live"
    assert api.job_artifacts(5) == "job/5/artifacts"
    assert api.schedule(9) == "schedule/9"
    assert api.RESOURCES["jobs"].windowed and not api.RESOURCES["projects"].windowed


@pytest.mark.parametrize(
    "bad",
    [
        "%2e%2e",
        "%2E%2e",
        ".%2e",
        "%2e",
        "%2E%2E",
        "%252e%252e",
        "run%2f..",
        "a%5cb",
        "a\\b",
        "x%3fy",
        "x%23y",
    ],
)
def test_percent_encoded_dot_segments_and_separators_are_refused(bad: str) -> None:
    for make in (api.job, api.job_log, api.job_artifacts, api.schedule, api.test_run_jobs):
        with pytest.raises(ValueError, match="not a valid path segment"):
            make(bad)


def test_ordinary_ids_with_percent_signs_still_pass() -> None:
    assert api.job("%41b") == "job/%41b"
    assert api.test_run_jobs("run-1") == "testRun/run-1/jobs"


# --- timestamps and the time zone of an offsetless ``scheduled`` ---------------------------------------

UTC = dt.timezone.utc


def test_parse_timestamp_keeps_offsets_and_reads_offsetless_values_in_the_given_zone() -> None:
    brussels = api.zone("Europe/Brussels")
    assert api.parse_timestamp("2018-03-19T13:15:43.239Z") == dt.datetime(
        2018, 3, 19, 13, 15, 43, 239000, tzinfo=UTC
    )
    assert api.parse_timestamp("2018-03-20T06:11:38+00:00", brussels) == dt.datetime(
        2018, 3, 20, 6, 11, 38, tzinfo=UTC
    )
    assert api.parse_timestamp("2018-03-19T13:15:35") == dt.datetime(2018, 3, 19, 13, 15, 35, tzinfo=UTC)
    assert api.parse_timestamp("2018-03-19T13:15:35", brussels) == dt.datetime(
        2018, 3, 19, 12, 15, 35, tzinfo=UTC
    )
    assert api.parse_timestamp("2018-07-01T12:00:00", brussels) == dt.datetime(2018, 7, 1, 10, tzinfo=UTC)
    with pytest.raises(ValueError, match="Invalid isoformat"):
        api.parse_timestamp("soon")


def test_parse_timestamp_at_the_dst_changes() -> None:
    brussels = api.zone("Europe/Brussels")
    # 25 March 2018: 02:00 CET became 03:00 CEST; 02:30 never happened: read with the offset before
    assert api.parse_timestamp("2018-03-25T01:59:59", brussels) == dt.datetime(
        2018, 3, 25, 0, 59, 59, tzinfo=UTC
    )
    assert api.parse_timestamp("2018-03-25T02:30:00", brussels) == dt.datetime(2018, 3, 25, 1, 30, tzinfo=UTC)
    assert api.parse_timestamp("2018-03-25T03:00:00", brussels) == dt.datetime(2018, 3, 25, 1, tzinfo=UTC)
    # 28 October 2018: 02:30 happened twice; the first occurrence (CEST) is taken
    assert api.parse_timestamp("2018-10-28T02:30:00", brussels) == dt.datetime(
        2018, 10, 28, 0, 30, tzinfo=UTC
    )
    assert api.parse_timestamp("2018-10-28T03:30:00", brussels) == dt.datetime(
        2018, 10, 28, 2, 30, tzinfo=UTC
    )


def test_zone_names() -> None:
    assert api.zone("UTC") is UTC and api.zone("utc") is UTC
    assert str(api.zone("Europe/Brussels")) == "Europe/Brussels"
    for bad in ("Mars/Olympus", "../etc/passwd", "Europe/"):
        with pytest.raises(ValueError, match="unknown time zone"):
            api.zone(bad)


def test_captured_runs_scheduled_against_their_first_jobs_started() -> None:
    """The evidence: most offsetless ``scheduled`` values are UTC, three are local time (CET)."""
    brussels = api.zone("Europe/Brussels")

    def lead(scheduled: str, started: str, zone: dt.tzinfo) -> float:
        return (api.parse_timestamp(started) - api.parse_timestamp(scheduled, zone)).total_seconds()

    for run_id, scheduled, _job, started in SCHEDULED_VS_STARTED:
        as_utc, as_local = lead(scheduled, started, UTC), lead(scheduled, started, brussels)
        if run_id in LOCAL_TIME_RUNS:
            assert -3600 < as_utc < 0 and 0 <= as_local < 60, run_id
        else:
            assert 0 <= as_utc < 60 and as_local >= 3600, run_id
    assert len(SCHEDULED_VS_STARTED) - len(LOCAL_TIME_RUNS) == 11
