"""Unit tests of the test-run operators: name resolution, posting, retry resume, deferral, uploads, artifacts.

The retry logic runs against a realistic context: a task instance that records XCom pushes and an
in-memory stand-in for Airflow 3.3's ``task_state_store`` (kept across tries of a task instance);
the DAG-level check with the real ``airflow dags test`` is in tests/sensors/test_dags.py.
"""

from __future__ import annotations

import json
import logging
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_quamotion.compat import HAS_RESUMABLE_JOBS, AirflowFailException, TaskDeferred
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionNotFoundError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.operators.test_run import (
    STATE_KEY,
    QuamotionJobArtifactsOperator,
    QuamotionStartTestRunOperator,
    QuamotionUploadOperator,
    resolve_application,
    resolve_device_group,
    resolve_test_package,
)
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger
from tests import sandbox_helpers
from tests.mocks import HOST, mock_aad, mock_projects
from tests.sandbox_helpers import start_run

#: Airflow >= 3.3 resumes a retry's run from task_state_store; below, every try posts a new run.
RESUMES = HAS_RESUMABLE_JOBS

P = f"{HOST}/project/acme/api/"
APPS = [
    {"appId": "demo.Acquaint", "displayName": "Acquaint", "version": "151", "operatingSystem": "Android"},
    {"appId": "demo.Acquaint", "displayName": "Acquaint", "version": "152", "operatingSystem": "Android"},
    {"appId": "demo.Shop", "displayName": "Shop", "version": "7", "operatingSystem": "iOS"},
]
PACKAGES = [
    {"name": "smoke", "version": "1.0"},
    {"name": "smoke", "version": "1.1"},
    {"name": "full", "version": "2"},
]
GROUPS = [
    {"deviceGroupId": "g-1", "name": "android-8", "displayName": "Android 8"},
    {"deviceGroupId": "g-2", "name": "ios-11", "displayName": "Phones"},
    {"deviceGroupId": "g-3", "name": "ios-12", "displayName": "Phones"},
]


@pytest.fixture(scope="module")
def own_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """This module's own sandbox: it creates runs the session sandbox's other users must not see."""
    yield from sandbox_helpers.private_sandbox(tmp_path_factory)


@pytest.fixture
def sandbox_conn(own_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """``own_sandbox`` as ``quamotion_default`` (overrides the session-wide fixture here)."""
    yield from sandbox_helpers.private_conn(own_sandbox, monkeypatch)


class FakeStore:
    """Airflow 3.3's task_state_store, in memory (one instance spans the tries of a task instance)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    def __init__(self, try_number: int = 1) -> None:
        self.task_id = "start"
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}
        self.pushes: list[str] = []
        self.stats_tags: dict[str, str] = {}  # read by ResumableJobMixin

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value
        self.pushes.append(key)


def context(store: FakeStore | None, try_number: int = 1) -> Any:
    ctx: dict[str, Any] = {"ti": FakeTI(try_number)}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


pytestmark = pytest.mark.usefixtures("mocked_connection")


@pytest.fixture
def api() -> Any:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(P + "app", json=APPS)
        m.get(P + "testPackage", json=PACKAGES)
        m.get(P + "deviceGroup", json=GROUPS)
        m.post_run = m.post(P + "testRun", json={"testRunId": "new-run", "jobs": []})
        yield m


def jobs(*statuses: str) -> list[dict[str, Any]]:
    return [{"id": 10 + i, "name": f"dev-{i}", "status": s} for i, s in enumerate(statuses)]


def op(**kwargs: Any) -> QuamotionStartTestRunOperator:
    kwargs.setdefault("app", "demo.Acquaint:152")
    kwargs.setdefault("test_package", "full")
    kwargs.setdefault("device_group", "Android 8")
    kwargs.setdefault("poke_interval", 0.01)
    kwargs.setdefault("deferrable", False)
    return QuamotionStartTestRunOperator(task_id="start", **kwargs)


# --- resolution ----------------------------------------------------------------------------------------


def test_resolution_by_name_version_and_dict() -> None:
    assert resolve_application("Shop", APPS)["version"] == "7"
    assert resolve_application("demo.Acquaint:151", APPS)["version"] == "151"
    assert resolve_application({"appId": "x"}, []) == {"appId": "x"}
    assert resolve_test_package("smoke:1.1", PACKAGES) == {"name": "smoke", "version": "1.1"}
    assert resolve_device_group("g-3", GROUPS)["name"] == "ios-12"
    assert resolve_device_group("android-8", GROUPS)["deviceGroupId"] == "g-1"
    assert resolve_device_group({"name": "ios-11"}, GROUPS)["deviceGroupId"] == "g-2"


def test_resolution_errors_are_clear() -> None:
    with pytest.raises(QuamotionConfigError, match=r"ambiguous: 2 match .*151.*152.*'appId:version'"):
        resolve_application("Acquaint", APPS)
    with pytest.raises(QuamotionNotFoundError, match="No application matches 'Nope'.*demo.Shop"):
        resolve_application("Nope", APPS)
    with pytest.raises(QuamotionConfigError, match="test package 'smoke' is ambiguous"):
        resolve_test_package("smoke", PACKAGES)
    with pytest.raises(QuamotionNotFoundError, match="No test package matches 'smoke:9'"):
        resolve_test_package("smoke:9", PACKAGES)
    with pytest.raises(QuamotionConfigError, match="device group 'Phones' is ambiguous.*deviceGroupId"):
        resolve_device_group("Phones", GROUPS)


def test_the_hook_resolves_names_and_looks_up_only_what_it_must(api: rm.Mocker) -> None:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
    from airflow_provider_quamotion.operators import test_run

    hook = QuamotionHook()
    assert test_run.resolve_application is resolve_application  # the operators' names, from the hook
    assert hook.resolve_application("demo.Acquaint:152")["version"] == "152"
    assert hook.resolve_test_package("full")["version"] == "2"
    assert hook.resolve_device_group("G-1")["name"] == "android-8"  # an id, any case
    assert hook.resolve_device_group("Android 8")["deviceGroupId"] == "g-1"
    before = api.call_count
    assert hook.resolve_application({"appId": "given"}) == {"appId": "given"}
    assert hook.resolve_device_group({"deviceGroupId": "g-9"}) == {"deviceGroupId": "g-9"}
    assert api.call_count == before  # dicts are used as given: no request


# --- start, XCom, state store ------------------------------------------------------------------------


def test_start_posts_resolved_records_and_pushes_the_id_first(api: rm.Mocker) -> None:
    store = FakeStore()
    ctx = context(store)
    assert op().execute(ctx) == "new-run"
    body = api.post_run.last_request.json()
    assert body["app"]["version"] == "152"
    assert body["testPackage"] == {"name": "full", "version": "2"}
    assert body["deviceGroupId"] == "g-1"
    assert ctx["ti"].xcom == {
        "test_run_id": "new-run",
        "test_run_url": f"{HOST}/project/acme/testRun/new-run",
    }
    assert store.data == {}  # nothing left to resume once the task reported


def test_wait_in_worker_succeeds_or_fails_with_summary(api: rm.Mocker) -> None:
    api.get(P + "testRun/new-run/jobs", [{"json": []}, {"json": jobs("running")}, {"json": jobs("success")}])
    assert op(wait_for_completion=True).execute(context(FakeStore())) == "new-run"
    api.get(P + "testRun/new-run/jobs", json=jobs("success", "failed"))
    store = FakeStore()
    with pytest.raises(AirflowFailException, match="job 11 on device dev-1: failed"):
        op(wait_for_completion=True).execute(context(store))
    assert store.data == {}


def test_wait_timeout_keeps_the_run_for_a_retry_which_resumes_it(api: rm.Mocker) -> None:
    api.get(P + "testRun/new-run/jobs", json=jobs("running"))
    store = FakeStore()
    with pytest.raises(QuamotionTimeoutError, match="did not finish within the wait's timeout of 0 s"):
        op(wait_for_completion=True, timeout=0).execute(context(store))
    assert store.data == ({STATE_KEY: "new-run"} if RESUMES else {})
    assert api.post_run.call_count == 1
    # the retry: same task instance, same store, the run still active -> resumed, not posted again
    api.get(
        P + "testRun/new-run/jobs",
        [{"json": jobs("running")}, {"json": jobs("running")}, {"json": jobs("success")}],
    )
    retry_ctx = context(store, try_number=2)
    assert op(wait_for_completion=True).execute(retry_ctx) == "new-run"
    assert api.post_run.call_count == (1 if RESUMES else 2)  # below 3.3 every try posts
    assert retry_ctx["ti"].xcom["test_run_id"] == "new-run"
    assert store.data == {}


@pytest.mark.parametrize(
    ("statuses", "outcome"), [(("success",), "new-run"), (("failed",), AirflowFailException)]
)
def test_retry_adopts_a_run_that_finished_meanwhile(
    api: rm.Mocker, statuses: tuple[str, ...], outcome: Any
) -> None:
    store = FakeStore()
    store.set(STATE_KEY, "new-run")
    api.get(P + "testRun/new-run/jobs", json=jobs(*statuses))
    if isinstance(outcome, str):
        assert op(wait_for_completion=True).execute(context(store, 2)) == outcome
    else:
        with pytest.raises(outcome):
            op(wait_for_completion=True).execute(context(store, 2))
    assert api.post_run.call_count == (0 if RESUMES else 1)
    assert store.data == {}  # the outcome is reported: the stored id is forgotten (on every minor)


def test_retry_posts_anew_when_the_old_run_is_gone(api: rm.Mocker) -> None:
    store = FakeStore()
    store.set(STATE_KEY, "vanished")
    api.get(P + "testRun/vanished/jobs", status_code=404, json={"error": "not_found"})
    assert op().execute(context(store, 2)) == "new-run"
    assert api.post_run.call_count == 1


def test_without_a_task_state_store_it_still_works_and_warns(
    api: rm.Mocker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert op().execute(context(None)) == "new-run"
    # below 3.3 compat.log_degraded's one line per process says it instead (the next test)
    assert ("has no task_state_store" in "".join(capsys.readouterr())) is RESUMES


def test_below_airflow_3_3_one_line_says_a_retry_starts_a_new_run(
    api: rm.Mocker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from airflow_provider_quamotion import compat
    from airflow_provider_quamotion.operators import test_run

    monkeypatch.setattr(test_run, "HAS_RESUMABLE_JOBS", False)
    monkeypatch.setattr(compat, "_degraded", set())
    with caplog.at_level(logging.WARNING, logger=compat.__name__):
        assert op().execute(context(None)) == "new-run"
        assert op().execute(context(None)) == "new-run"
    lines = [r.getMessage() for r in caplog.records if r.name == compat.__name__]
    assert len(lines) == 1 and "ResumableJobMixin" in lines[0] and "starts a new one" in lines[0], lines


def test_the_operator_is_a_resumable_job_on_the_compat_mixin() -> None:
    from airflow_provider_quamotion import compat

    assert issubclass(QuamotionStartTestRunOperator, compat.ResumableJobMixin)
    assert QuamotionStartTestRunOperator.external_id_key == STATE_KEY


def test_deferrable_posts_in_the_worker_then_defers(api: rm.Mocker) -> None:
    store = FakeStore()
    ctx = context(store)
    with pytest.raises(TaskDeferred) as deferred:
        op(wait_for_completion=True, deferrable=True, timeout=600, allow_skipped=True).execute(ctx)
    assert api.post_run.call_count == 1
    assert ctx["ti"].pushes[0] == "test_run_id"  # pushed before deferring
    trigger = deferred.value.trigger
    assert isinstance(trigger, QuamotionTestRunTrigger)
    assert (trigger.test_run_id, trigger.allow_skipped) == ("new-run", True)
    assert trigger.deadline is not None
    assert store.data == ({STATE_KEY: "new-run"} if RESUMES else {})
    s = op(timeout=600)
    event = {"status": "timeout", "test_run_id": "new-run", "message": "late."}
    with pytest.raises(QuamotionTimeoutError, match="Limit: the wait's timeout of 600 s"):
        s.execute_complete(ctx, event)
    assert store.data == ({STATE_KEY: "new-run"} if RESUMES else {})  # a retry resumes it
    with pytest.raises(AirflowFailException):
        s.execute_complete(ctx, {**event, "status": "failed", "jobs": [], "job_count": 1})
    assert store.data == {}


def test_no_network_in_init() -> None:
    with rm.Mocker() as m:  # any request would raise NoMockAddress
        op(deferrable=True, wait_for_completion=True)
        QuamotionUploadOperator(task_id="u", path="x.apk")
        QuamotionJobArtifactsOperator(task_id="a", test_run_id="r", destination="/tmp/x")
        assert m.call_count == 0


def test_upload_kind_is_checked() -> None:
    with pytest.raises(QuamotionConfigError, match="kind must be one of"):
        QuamotionUploadOperator(task_id="u", path="x.apk", kind="video")


# --- uploads and artifacts against the sandbox ----------------------------------------------------------


def test_upload_from_object_storage_path(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    (tmp_path / "Shop-3.1.0.apk").write_bytes(b"PK" + b"z" * 5000)
    item = QuamotionUploadOperator(
        task_id="u", path=ObjectStoragePath(f"file://{tmp_path}/Shop-3.1.0.apk")
    ).execute({})
    assert item["appId"] == "com.sandbox.shop" and item["versionDisplayName"] == "3.1.0"
    package = QuamotionUploadOperator(
        task_id="p", path=str(tmp_path / "Shop-3.1.0.apk").replace(".apk", ".zip"), kind="test_package"
    )
    with pytest.raises(QuamotionConfigError, match="no such file"):
        package.execute({})


def test_artifacts_are_streamed_to_storage_skipping_jobs_without_artifacts(
    sandbox_conn: Sandbox, tmp_path: Path
) -> None:
    run_id = start_run()
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    hook = QuamotionHook()
    deadline = time.monotonic() + 20
    while not all(j["status"] == "success" for j in hook.list_jobs(run_id) or [{"status": "x"}]):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    jobs_ = hook.list_jobs(run_id)
    summary = QuamotionJobArtifactsOperator(
        task_id="a", test_run_id=run_id, destination=f"file://{tmp_path}/out"
    ).execute({})
    expected = {f"job-{j['id']}.log" for j in jobs_} | {
        f"job-{j['id']}-artifacts.zip" for j in jobs_ if j.get("hasArtifacts")
    }
    written = sorted((tmp_path / "out").iterdir())
    assert {p.name for p in written} == expected
    assert summary == {
        "test_run_id": run_id,
        "count": len(expected),
        "total_bytes": sum(p.stat().st_size for p in written),
        "destination": f"file://{tmp_path}/out",
    }
    for path in written:
        if path.suffix == ".zip":
            assert zipfile.ZipFile(path).namelist()
        else:
            assert path.read_text().strip()
    assert not [p for p in (tmp_path / "out").iterdir() if ".quamotion-tmp-" in p.name]
    logs_only = QuamotionJobArtifactsOperator(
        task_id="b", test_run_id=run_id, destination=str(tmp_path / "logs"), include_artifacts=False
    ).execute({})
    assert logs_only["count"] == len(jobs_) == len(list((tmp_path / "logs").iterdir()))
    assert all(p.suffix == ".log" for p in (tmp_path / "logs").iterdir())
    assert len(json.dumps(summary)) < 300  # small and JSON-safe for XCom, whatever the number of jobs


def test_artifacts_skip_jobs_without_artifacts(api: rm.Mocker, tmp_path: Path) -> None:
    api.get(P + "testRun/r/jobs", json=[{"id": 1, "status": "success", "hasArtifacts": False}])
    api.get(P + "job/1/log", text="log line")
    zip_route = api.get(P + "job/1/artifacts", content=b"PK")
    summary = QuamotionJobArtifactsOperator(task_id="a", test_run_id="r", destination=str(tmp_path)).execute(
        {}
    )
    assert summary == {"test_run_id": "r", "count": 1, "total_bytes": 8, "destination": f"file://{tmp_path}"}
    assert (tmp_path / "job-1.log").read_text() == "log line"
    assert zip_route.call_count == 0
