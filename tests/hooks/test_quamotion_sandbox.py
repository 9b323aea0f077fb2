"""Integration tests of the hooks against the sandbox: real TLS, real MSAL, real HTTP."""

from __future__ import annotations

import json
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_provider_quamotion import auth
from airflow_provider_quamotion.api import TestRunState, run_state_from_jobs
from airflow_provider_quamotion.exceptions import (
    QuamotionApiError,
    QuamotionAuthError,
    QuamotionNotFoundError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.settings import RetryPolicy
from tests.mocks import reset_process_caches

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_attempts=5, backoff_initial=0.05, backoff_max=0.2, retry_after_max=2)
EXAMPLE_FILES = Path(__file__).resolve().parents[2] / "example_dags" / "files"


@pytest.fixture(autouse=True)
def _fresh_caches(sandbox_conn: Sandbox) -> None:
    reset_process_caches()


def _set_conn(monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox, **changes: object) -> None:
    doc = json.loads(sandbox.connection_json)
    for key, value in changes.items():
        if key in ("host", "login", "password"):
            doc[key] = value
        elif value is None:
            doc["extra"].pop(key, None)
        else:
            doc["extra"][key] = value
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(doc))


def test_every_hook_method_works_against_the_sandbox(sandbox_conn: Sandbox, tmp_path: Path) -> None:
    hook = QuamotionHook(retry=FAST)
    assert hook.test_connection()[0]
    assert isinstance(hook.get_version(), dict)
    (project,) = hook.list_projects()
    assert hook.url_for("testRun") == f"{sandbox_conn.api_url}{project['relativeUrl']}api/testRun"
    runs = hook.list_test_runs()
    generated = list(sandbox_conn.expected_test_runs())
    assert len(generated) == 300
    by_id = {r["testRunId"]: r for r in runs}
    assert [by_id.get(r["testRunId"]) for r in generated] == generated  # plus runs other tests started
    assert [r["testRunId"] for r in hook.iter_test_runs()] == [r["testRunId"] for r in runs]
    assert hook.get_test_run(runs[5]["testRunId"]) == runs[5]
    jobs = hook.list_jobs(runs[5]["testRunId"])
    assert jobs
    job = hook.get_job(jobs[0]["id"])
    assert job["id"] == jobs[0]["id"]
    assert hook.get_job_log(job["id"]).strip()
    with_artifacts = next(
        j for r in runs[:50] for j in hook.list_jobs(r["testRunId"]) if j.get("hasArtifacts")
    )
    target = hook.download_job_artifacts(with_artifacts["id"], tmp_path / "artifacts.zip")
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert archive.namelist()
    log_path = hook.download_job_log(job["id"], tmp_path / "job.log")
    assert Path(log_path).read_text() == hook.get_job_log(job["id"])

    app = hook.upload_application(EXAMPLE_FILES / "Acquaint.apk")
    package = hook.upload_test_package(EXAMPLE_FILES / "acquaint-tests.zip")
    assert app in hook.list_applications()
    assert package in hook.list_test_packages()
    group = hook.list_device_groups()[0]
    run = hook.start_test_run(app, package, group["deviceGroupId"])
    assert run_state_from_jobs(hook.list_jobs(run["testRunId"])) is TestRunState.QUEUED
    deadline = time.monotonic() + 20
    state = TestRunState.QUEUED
    while time.monotonic() < deadline and not state.is_terminal:
        time.sleep(0.3)
        state = run_state_from_jobs(hook.list_jobs(run["testRunId"]))
    assert state is TestRunState.SUCCESS

    schedules = hook.list_schedules()
    hook.delete_schedule(schedules[0]["id"])
    assert schedules[0]["id"] not in {s["id"] for s in hook.list_schedules()}
    with pytest.raises(QuamotionNotFoundError):
        hook.delete_schedule(schedules[0]["id"])
    with pytest.raises(QuamotionNotFoundError, match="does not exist"):
        hook.get_test_run("00000000-0000-0000-0000-000000000000")


def test_one_token_for_many_hooks_and_threads(sandbox_conn: Sandbox) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def call(_: int) -> object:
        return QuamotionHook(retry=FAST).get_version()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, range(64)))
    assert sandbox_conn.counters()["tokens_issued"] == 1


def test_revoked_token_is_renewed_once(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook(retry=FAST)
    hook.get_version()
    sandbox_conn.revoke_tokens()
    hook.get_version()
    counters = sandbox_conn.counters()
    assert counters["tokens_issued"] == 2
    assert counters["status"].get("401") == 1


def test_retry_after_and_5xx_and_dropped_connections(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(
        "airflow_provider_quamotion.transport.policy.time.sleep",
        lambda s: (sleeps.append(s), real_sleep(min(s, 0.05))),
    )
    hook = QuamotionHook(retry=FAST)
    sandbox_conn.set_faults(path="^/api/version$", sequence=[429, 503, "drop", 502, "ok"], retry_after=1)
    assert hook.get_version()
    assert sleeps[:2] == [1.0, 1.0]
    assert len(sleeps) == 4
    assert sandbox_conn.counters()["by_path"]["/api/version"] == 5


def test_post_is_not_repeated_after_a_server_error(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook(retry=FAST)
    app = hook.list_applications()[0]
    package = hook.list_test_packages()[0]
    group = hook.list_device_groups()[0]
    before = len(hook.list_test_runs())
    sandbox_conn.set_faults(path="api/testRun$", sequence=[503])
    with pytest.raises(QuamotionApiError, match="HTTP 503"):
        hook.start_test_run(app, package, group["deviceGroupId"])
    sandbox_conn.clear_faults()
    assert len(hook.list_test_runs()) == before


def test_api_key_login(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, sandbox_conn, login="", password="")
    hook = QuamotionHook(retry=FAST)
    assert hook.settings.uses_api_key
    for _ in range(5):
        QuamotionHook(retry=FAST).get_version()
    counters = sandbox_conn.counters()
    assert counters["logins"] == 1
    assert counters["tokens_issued"] == 0


def test_wrong_secret_names_aadsts7000215(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, sandbox_conn, password="not-the-secret-123")
    ok, message = QuamotionHook(retry=FAST).test_connection()
    assert not ok
    assert "AADSTS7000215" in message
    assert "client secret is wrong" in message
    assert "not-the-secret-123" not in message
    assert sandbox_conn.client_secret not in message


def test_wrong_api_key_is_a_clear_error(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, sandbox_conn, login="", password="", api_key="wrong-key-123456")
    with pytest.raises(QuamotionAuthError, match="refused the API key"):
        QuamotionHook(retry=FAST).get_version()


def test_unknown_tenant_is_a_clear_error(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, sandbox_conn, tenant_id="no-such-tenant.example")
    with pytest.raises(QuamotionAuthError, match=r"does not know the tenant .*AADSTS90002.*Check tenant_id"):
        QuamotionHook(retry=FAST).get_version()


def test_common_tenant_is_refused_with_a_fix(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    _set_conn(monkeypatch, sandbox_conn, tenant_id=None)
    with pytest.raises(QuamotionAuthError, match=r"AADSTS50059.*Set tenant_id"):
        QuamotionHook(retry=FAST).get_version()


def test_one_slash_scope_fails_clearly(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook(retry=FAST)
    one_slash = replace(hook.settings, resource="https://cloud.quamotion.mobi")
    assert one_slash.scope == "https://cloud.quamotion.mobi/.default"
    provider = auth.CachedTokenProvider(auth.MsalClientCredentials(one_slash))
    from airflow_provider_quamotion.transport import QuamotionSession

    with (
        QuamotionSession(one_slash, provider) as session,
        pytest.raises(QuamotionAuthError, match=r"HTTP 401.*resource \(it must end with '/'"),
    ):
        session.get("/api/version")


def test_unknown_project_lists_the_visible_ones(sandbox_conn: Sandbox) -> None:
    with pytest.raises(QuamotionNotFoundError, match=r"'nope' is not visible.*Visible projects: \w+"):
        QuamotionHook(retry=FAST, project="nope").list_applications()


async def test_async_hook_shares_the_token_and_policy(sandbox_conn: Sandbox) -> None:
    sync = QuamotionHook(retry=FAST)
    run_id = sync.list_test_runs()[0]["testRunId"]
    hook = QuamotionAsyncHook(retry=FAST)
    try:
        assert await hook.list_jobs(run_id) == sync.list_jobs(run_id)
        sandbox_conn.set_faults(path="/jobs$", sequence=[503, "drop", 429, "ok"], retry_after=0)
        assert await hook.list_jobs(run_id) == sync.list_jobs(run_id)
        sandbox_conn.revoke_tokens()
        assert await hook.list_jobs(run_id)
        with pytest.raises(QuamotionNotFoundError):
            await hook.list_jobs("00000000-0000-0000-0000-000000000000")
    finally:
        await hook.aclose()
    assert sandbox_conn.counters()["tokens_issued"] == 2


def test_tls_is_verified_by_default_and_fails_clearly(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _set_conn(monkeypatch, sandbox_conn, verify=None)
    before = sandbox_conn.counters()["requests"]
    with pytest.raises(
        QuamotionAuthError,
        match=r"Could not get a token from Azure AD: GET https://localhost:\d+/.*openid-configuration failed \(SSLError\)\. TLS certificate verification failed\. Set 'verify'",
    ):
        QuamotionHook(retry=FAST).get_version()
    assert sandbox_conn.counters()["requests"] == before


def test_token_service_outage_is_transient_and_a_refusal_is_not(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox_conn.set_faults(path="/oauth2/v2.0/token$", status=503, retry_after=0)
    with pytest.raises(QuamotionAuthError) as outage:
        QuamotionHook(retry=RetryPolicy(max_attempts=2, backoff_initial=0.01)).get_version()
    assert outage.value.transient
    sandbox_conn.clear_faults()
    reset_process_caches()
    _set_conn(monkeypatch, sandbox_conn, password="wrong-secret-value-1")
    with pytest.raises(QuamotionAuthError) as refused:
        QuamotionHook(retry=FAST).get_version()
    assert not refused.value.transient
    assert refused.value.code == "AADSTS7000215"


def _first_job_of_new_run(hook: QuamotionHook) -> tuple[str, dict]:
    from tests.sandbox_helpers import start_run

    run_id = start_run()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        jobs = hook.list_jobs(run_id)
        if jobs:
            return run_id, jobs[0]
        time.sleep(0.05)
    raise AssertionError("the run got no jobs")


def test_stream_job_log_follows_a_running_job_until_it_ends(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook()
    run_id, job = _first_job_of_new_run(hook)
    assert job["status"] in ("pending", "running")
    arrivals: list[tuple[float, str]] = []
    for line in hook.stream_job_log(job["id"]):
        arrivals.append((time.monotonic(), line))
    lines = [line for _, line in arrivals]
    assert lines[0].startswith(f"Quamotion sandbox runner: job {job['id']} of test run {run_id}")
    assert lines[-1] == "Job finished: success"
    assert hook.get_job(job["id"])["status"] == "success"  # the stream ended with the job
    assert arrivals[-1][0] - arrivals[0][0] > 0.2  # lines came as the job wrote them, not at once
    assert lines == hook.get_job_log(job["id"]).splitlines()
    with hook.request("GET", f"job/{job['id']}/log/live", stream=True) as response:
        assert response.headers.get("transfer-encoding") == "chunked"  # streamed, not sized up front


def test_stream_job_log_stops_at_its_byte_budget(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook()
    job_id = sandbox_conn.data.jobs(0)[0]["id"]
    full = hook.get_job_log(job_id)
    budget = 100
    lines = list(hook.stream_job_log(job_id, max_bytes=budget))
    assert sum(len(line.encode()) + 1 for line in lines) <= budget + 1
    assert "\n".join(lines) == full.encode()[:budget].decode("utf-8", errors="replace").rstrip("\n")
    assert list(hook.stream_job_log(job_id)) == full.splitlines()
    with pytest.raises(QuamotionNotFoundError):
        list(hook.stream_job_log(999))


def test_stream_job_log_stops_at_its_deadline_with_the_complete_lines(sandbox_conn: Sandbox) -> None:
    hook = QuamotionHook()
    _, job = _first_job_of_new_run(hook)
    lines: list[str] = []
    with pytest.raises(QuamotionTimeoutError, match="still arriving at the deadline"):
        for line in hook.stream_job_log(job["id"], deadline=time.time() + 0.3):
            lines.append(line)
    assert lines and lines[0].startswith(f"Quamotion sandbox runner: job {job['id']}")
    assert "Job finished: success" not in lines  # the job was still running at the deadline
    assert all(line in hook.get_job_log(job["id"]).splitlines() for line in lines)  # whole lines only


async def test_async_stream_job_log_follows_a_running_job_until_it_ends(sandbox_conn: Sandbox) -> None:
    import contextlib

    sync = QuamotionHook()
    _, job = _first_job_of_new_run(sync)
    hook = QuamotionAsyncHook()
    try:
        arrivals = [(time.monotonic(), line) async for line in hook.stream_job_log(job["id"])]
        lines = [line for _, line in arrivals]
        assert lines[-1] == "Job finished: success" and lines == sync.get_job_log(job["id"]).splitlines()
        assert arrivals[-1][0] - arrivals[0][0] > 0.2  # as the job wrote them
        full = sync.get_job_log(job["id"])
        cut = [line async for line in hook.stream_job_log(job["id"], max_bytes=100)]
        assert "\n".join(cut) == full.encode()[:100].decode("utf-8", errors="replace").rstrip("\n")
        with pytest.raises(QuamotionNotFoundError):
            _ = [line async for line in hook.stream_job_log(999)]
        _, running = _first_job_of_new_run(sync)
        early: list[str] = []
        with pytest.raises(QuamotionTimeoutError):
            async with contextlib.aclosing(
                hook.stream_job_log(running["id"], deadline=time.time() + 0.3)
            ) as stream:
                async for line in stream:
                    early.append(line)
        assert early and "Job finished: success" not in early
    finally:
        await hook.aclose()
