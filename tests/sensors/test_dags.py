"""DAG-level runs with the real ``airflow dags test`` (triggers run inline) against the sandbox.

Three DAGs (tests/sensors/dags/quamotion_test_dags.py) run in parallel, each with its own copy of a
migrated metadata database; the tests read their outcome from the database, the output and the files.

* ``q_poke``: start (no wait) -> sensor in poke mode and in reschedule mode -> artifacts to storage;
  the generic sensor in poke mode with a ``PokeReturnValue``.
* ``q_deferrable``: upload an app and a package -> start with them and wait deferred -> deferrable
  sensor; the generic sensor deferred with a callable check (false once: re-deferral) and with a
  dotted-path check; the extra link's URL.
* ``q_failures`` (its own, slower sandbox): a failed run (``AirflowFailException``, no retry), a
  deadline hit while deferred (``AirflowSensorTimeout``), and a start whose first try is lost after
  posting: the retry resumes the same run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import SENSOR_DAGS, DagRun, migrated_template

DAG_IDS = ("q_poke", "q_deferrable", "q_failures")


@pytest.fixture(scope="module")
def slow_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """Runs stay active ~4.5 s: long enough for a retry to find its run still running."""
    with Sandbox(
        tmp_path_factory.mktemp("slow-sandbox"), runs=20, seed=1, queue_seconds=1.5, run_seconds=3.0
    ) as sb:
        yield sb


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox (the DAGs create runs and uploads other tests must not see)."""
    with Sandbox(
        tmp_path_factory.mktemp("dag-sandbox"), runs=20, seed=0, queue_seconds=0.5, run_seconds=1.0
    ) as sb:
        yield sb


@pytest.fixture(scope="module")
def dag_runs(
    sandbox: Sandbox, slow_sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, DagRun]:
    migrated_template()
    root = tmp_path_factory.mktemp("dag-runs")
    runs: dict[str, DagRun] = {}
    for dag_id in DAG_IDS:
        results = root / dag_id / "results"
        results.mkdir(parents=True)
        (results / "Shop-2.3.0.apk").write_bytes(b"PK\x03\x04" + b"a" * 4096)
        (results / "smoke-tests-1.0.2.zip").write_bytes(b"PK\x03\x04" + b"t" * 2048)
        sb = slow_sandbox if dag_id == "q_failures" else sandbox
        runs[dag_id] = DagRun(dag_id, root / dag_id / "home", results, dags_folder=SENSOR_DAGS).start(
            sb.connection_json
        )
    for run in runs.values():
        run.wait(timeout=150)
    return runs


def test_poke_reschedule_generic_and_artifacts(dag_runs: dict[str, DagRun]) -> None:
    run = dag_runs["q_poke"]
    assert run.returncode == 0, run.tail()
    states = run.task_states()
    assert {t: s for t, (s, _) in states.items()} == dict.fromkeys(
        ("start", "start_second", "wait", "wait_reschedule", "save", "generic"), "success"
    )
    run_id = run.xcom("start")
    assert run.xcom("start", "test_run_id") == run_id
    assert run.xcom("wait") == {"test_run_id": run_id, "state": "success", "job_count": 2}
    assert run.xcom("wait_reschedule")["test_run_id"] == run.xcom("start_second")
    assert run.query("SELECT COUNT(*) FROM task_reschedule")[0][0] >= 1  # really rescheduled
    assert run.task_states()["wait_reschedule"] == ("success", 1)
    assert run.xcom("generic") == {"groups": 4}
    saved = run.xcom("save")
    directory = run.results / "artifacts" / "20240101"
    files = sorted(p.name for p in directory.iterdir())
    assert len(files) == 4
    assert saved == {
        "test_run_id": run_id,
        "count": 4,
        "total_bytes": sum((directory / f).stat().st_size for f in files),
        "destination": f"file://{directory}",
    }
    assert {f.rsplit("-", 1)[-1] for f in files if f.endswith(".zip")} == {"artifacts.zip"}
    assert all((directory / f).stat().st_size > 0 for f in files)


def test_deferrable_upload_start_wait_generic_and_link(dag_runs: dict[str, DagRun], sandbox: Sandbox) -> None:
    run = dag_runs["q_deferrable"]
    assert run.returncode == 0, run.tail()
    assert {s for s, _ in run.task_states().values()} == {"success"}
    app = run.xcom("upload_app")
    assert app["appId"] == "com.sandbox.shop" and app["versionDisplayName"] == "2.3.0"
    assert run.xcom("upload_package")["name"] == "smoke-tests.zip"  # the service keeps the extension
    run_id = run.xcom("start")
    assert run.xcom("wait")["test_run_id"] == run_id
    assert run.output.count("[DAG TEST] running trigger in line") >= 4  # start, wait, generic x2
    assert "response_check is false; polling again" in run.output  # the callable check re-deferred
    assert run.xcom("generic") is None
    assert run.xcom("generic_path") == {"groups": 4}
    expected = f"{sandbox.api_url}/project/sandbox/testRun/{run_id}"
    assert run.xcom("start", "test_run_url") == expected
    assert run.xcom("start", "_link_QuamotionTestRunLink") == expected
    assert run.xcom("wait", "_link_QuamotionTestRunLink") == expected


def test_failed_run_deadline_and_retry_resume(dag_runs: dict[str, DagRun], slow_sandbox: Sandbox) -> None:
    run = dag_runs["q_failures"]
    assert run.returncode == 0, run.tail()  # the run's state follows its leaf, start_flaky
    states = run.task_states()
    # a finished failure is not retried (retries=2) and names every job that did not pass
    assert states["wait_failed"] == ("failed", 1)
    failed_id = run.xcom("start_failing")
    assert f"Quamotion test run {failed_id} finished and did not pass: 2 of 2 job(s)" in run.output
    assert "AirflowFailException" in run.output
    # the deadline hit while deferred fails the task with a clear message
    assert states["wait_deadline"][0] == "failed"
    slow_id = run.xcom("start_slow")
    assert f"AirflowSensorTimeout: Test run {slow_id} did not finish before the deadline" in run.output, (
        run.tail()
    )
    assert "Limit: the sensor's timeout of 0.4 s" in run.output
    # the retry resumed the first try's run instead of posting another
    assert states["start_flaky"] == ("success", 2)
    first = (run.results / "first_try_run_id").read_text()
    assert run.xcom("start_flaky") == first
    assert f"Resuming test run {first} started by a previous try" in run.output
    assert json.loads((run.results / "retry_saw_xcom").read_text()) is None  # XCom is cleared per try
    assert slow_sandbox.counters()["by_path"]["/project/sandbox/api/testRun"] == 3  # 3 starts, 3 POSTs
    assert not run.query("SELECT * FROM task_state_store")  # forgotten once reported


def test_no_secret_in_any_dag_output(
    dag_runs: dict[str, DagRun], sandbox: Sandbox, slow_sandbox: Sandbox
) -> None:
    for run in dag_runs.values():
        for sb in (sandbox, slow_sandbox):
            assert sb.client_secret not in run.output
            assert sb.api_key not in run.output
