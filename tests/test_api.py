"""The API's shape: statuses, a run's state, list unwrapping, path segments."""

from __future__ import annotations

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.api import JobStatus, TestRunState, run_state_from_jobs


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


def test_unknown_status_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown job status 'exploded'; known statuses: created"):
        run_state_from_jobs([{"status": "exploded"}])


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
