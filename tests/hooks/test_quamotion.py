"""Unit tests of QuamotionHook with requests-mock: auth, transport policy, resources, errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
import requests_mock as rm

from airflow_provider_quamotion import api, compat
from airflow_provider_quamotion.exceptions import (
    QuamotionApiError,
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionInsecureRequestError,
    QuamotionNotFoundError,
    QuamotionRateLimitedError,
    QuamotionResponseError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.settings import RetryPolicy
from tests.mocks import (
    API_KEY,
    AUTHORITY,
    CLIENT_ID,
    HOST,
    PROJECTS,
    SECRET,
    TENANT,
    TOKEN,
    TOKEN2,
    connection_json,
    mock_aad,
    mock_aad_error,
    mock_projects,
    reset_process_caches,
)

FAST = RetryPolicy(max_attempts=4, backoff_initial=0.01, backoff_max=0.02)


pytestmark = pytest.mark.usefixtures("mocked_connection")


def _hook(**settings: object) -> QuamotionHook:
    settings.setdefault("retry", FAST)
    return QuamotionHook(**settings)


# --- tokens ---------------------------------------------------------------------------------------


def test_token_request_uses_double_slash_scope_and_secret_in_form_body() -> None:
    with rm.Mocker() as m:
        token = mock_aad(m)
        m.get(f"{HOST}/api/version", json={"version": "1.0"})
        assert _hook().get_version() == {"version": "1.0"}
        form = parse_qs(token.last_request.text)
        assert form["scope"] == ["https://cloud.quamotion.mobi//.default"]
        assert form["client_id"] == [CLIENT_ID]
        assert form["client_secret"] == [SECRET]
        assert form["grant_type"] == ["client_credentials"]
        assert SECRET not in token.last_request.url
        assert m.request_history[-1].headers["Authorization"] == f"Bearer {TOKEN}"


def test_token_is_shared_across_hook_instances() -> None:
    with rm.Mocker() as m:
        token = mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        for _ in range(20):
            _hook().get_version()
        assert token.call_count == 1


def test_authority_is_host_plus_tenant_and_no_other_host_is_called() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        _hook().get_version()
        hosts = {r.hostname for r in m.request_history}
        assert hosts == {"login.microsoftonline.com", "cloud.quamotion.mobi"}
        assert all(f"/{TENANT}/" in r.path for r in m.request_history if r.hostname.startswith("login"))


def test_401_drops_the_token_gets_a_new_one_and_retries_once() -> None:
    with rm.Mocker() as m:
        token = mock_aad(m, tokens=[TOKEN, TOKEN2])
        api = m.get(f"{HOST}/api/version", [{"status_code": 401}, {"json": {"ok": True}}])
        assert _hook().get_version() == {"ok": True}
        assert token.call_count == 2
        assert [r.headers["Authorization"] for r in api.request_history] == [
            f"Bearer {TOKEN}",
            f"Bearer {TOKEN2}",
        ]


def test_401_twice_raises_auth_error() -> None:
    with rm.Mocker() as m:
        mock_aad(m, tokens=[TOKEN, TOKEN2])
        m.get(
            f"{HOST}/api/version",
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            text="nope",
        )
        with pytest.raises(QuamotionAuthError, match=r"GET /api/version was refused with HTTP 401"):
            _hook().get_version()


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (7000215, "client secret is wrong"),
        (90002, "Set tenant_id"),
        (50059, "Set tenant_id"),
        (900023, "Set tenant_id"),
        (500011, "trailing slash"),
    ],
)
def test_azure_ad_errors_name_code_and_fix_without_secrets(code: int, fix: str) -> None:
    with rm.Mocker() as m:
        mock_aad_error(
            m,
            400 if code != 7000215 else 401,
            {
                "error": "invalid_client",
                "error_description": f"AADSTS{code}: something about {SECRET}.\r\nTrace ID: x",
                "error_codes": [code],
                "correlation_id": "corr-1",
            },
        )
        with pytest.raises(QuamotionAuthError) as info:
            _hook().get_version()
    message = str(info.value)
    assert f"AADSTS{code}" in message
    assert fix in message
    assert "corr-1" in message
    assert SECRET not in message
    assert info.value.code == f"AADSTS{code}"


def test_api_key_login_posts_form_field_and_uses_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(login=None, password=None, api_key=API_KEY)
    )
    with rm.Mocker() as m:
        login = m.post(f"{HOST}/api/login", json={"access_token": TOKEN, "expires_in": 3600})
        version = m.get(f"{HOST}/api/version", json={"v": 1})
        _hook().get_version()
        _hook().get_version()
        assert login.call_count == 1
        assert parse_qs(login.last_request.text) == {"apiKey": [API_KEY]}
        assert "Authorization" not in login.last_request.headers
        assert version.last_request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert not any(r.hostname.startswith("login.") for r in m.request_history)


def test_api_key_rejected_has_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(login=None, password=None, api_key=API_KEY)
    )
    with rm.Mocker() as m:
        m.post(f"{HOST}/api/login", status_code=401, text="bad key")
        with pytest.raises(QuamotionAuthError, match="refused the API key") as info:
            _hook().get_version()
    assert API_KEY not in str(info.value)


# --- retries ---------------------------------------------------------------------------------------


def test_retry_after_seconds_is_honoured(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(
            f"{HOST}/api/version",
            [{"status_code": 429, "headers": {"Retry-After": "7"}}, {"json": {"ok": 1}}],
        )
        assert _hook(retry=RetryPolicy(max_attempts=3)).get_version() == {"ok": 1}
    assert sleeps == [7.0]


def test_retry_after_http_date_is_honoured_and_capped(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(
            f"{HOST}/api/version",
            [{"status_code": 503, "headers": {"Retry-After": "Fri, 31 Dec 2100 23:59:59 GMT"}}, {"json": {}}],
        )
        _hook(retry=RetryPolicy(max_attempts=3, retry_after_max=12.0)).get_version()
    assert sleeps == [12.0]


def test_5xx_and_connection_errors_are_retried_with_backoff(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(
            f"{HOST}/api/version",
            [
                {"status_code": 503},
                {"exc": requests.ConnectionError("reset")},
                {"status_code": 502},
                {"json": {"ok": True}},
            ],
        )
        assert _hook(retry=RetryPolicy(max_attempts=5, backoff_initial=1, backoff_max=3)).get_version() == {
            "ok": True
        }
    assert len(sleeps) == 3
    assert 0.5 <= sleeps[0] <= 1 and 1 <= sleeps[1] <= 2 and 1.5 <= sleeps[2] <= 3


def test_retries_are_capped_and_end_in_a_typed_error(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        api = m.get(f"{HOST}/api/version", status_code=429, text="slow down")
        with pytest.raises(QuamotionRateLimitedError, match="429") as info:
            _hook().get_version()
        assert api.call_count == FAST.max_attempts
    assert info.value.status == 429


def test_other_errors_raise_at_once_with_method_path_status_and_body() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        api = m.get(f"{HOST}/project/acme/api/testRun", status_code=400, text='{"error": "bad filter"}')
        mock_projects(m)
        with pytest.raises(QuamotionApiError) as info:
            _hook().list_test_runs()
        assert api.call_count == 1
    assert str(info.value).startswith("GET /project/acme/api/testRun failed with HTTP 400")
    assert "bad filter" in str(info.value)


def test_post_is_not_repeated_after_a_5xx_but_is_after_429(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        post = m.post(f"{HOST}/project/acme/api/testRun", status_code=503)
        with pytest.raises(QuamotionApiError):
            _hook().request("POST", "testRun", json={})
        assert post.call_count == 1
        post = m.post(
            f"{HOST}/project/acme/api/testRun",
            [{"status_code": 429, "headers": {"Retry-After": "1"}}, {"json": {"testRunId": "r1"}}],
        )
        assert _hook().request("POST", "testRun", json={}).json() == {"testRunId": "r1"}
        assert post.call_count == 2


def test_post_is_not_repeated_after_a_read_timeout() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        post = m.post(f"{HOST}/project/acme/api/testRun", exc=requests.ReadTimeout("slow"))
        with pytest.raises(QuamotionApiError, match="ReadTimeout"):
            _hook().request("POST", "testRun", json={})
        assert post.call_count == 1


# --- URLs, origins, TLS ----------------------------------------------------------------------------


def test_endpoints_resolve_against_the_project_root_looked_up_once() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        projects = mock_projects(m)
        m.get(f"{HOST}/project/acme/api/testRun", json=[{"testRunId": "a"}])
        m.get(f"{HOST}/api/version", json={})
        hook = _hook()
        hook.get_version()
        assert projects.call_count == 0  # host-root endpoints need no project
        assert hook.list_test_runs() == [{"testRunId": "a"}]
        assert _hook().list_test_runs() == [{"testRunId": "a"}]
        assert projects.call_count == 1
        assert hook.url_for("testRun/x/jobs") == f"{HOST}/project/acme/api/testRun/x/jobs"


def test_several_projects_without_a_name_fail_listing_them() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m, [*PROJECTS, {"name": "other", "relativeUrl": "/project/other/"}])
        with pytest.raises(QuamotionConfigError, match=r"sees 2 Quamotion projects \(acme, other\)"):
            _hook().list_applications()


def test_named_project_is_used_and_an_unknown_one_is_a_clear_error() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m, [*PROJECTS, {"name": "other", "relativeUrl": "/project/other/"}])
        apps = m.get(f"{HOST}/project/other/api/app", json={"value": [{"appId": "x"}]})
        assert _hook(project="other").list_applications() == [{"appId": "x"}]
        assert apps.call_count == 1
        with pytest.raises(QuamotionNotFoundError, match="'nope' is not visible.*acme, other"):
            _hook(project="nope").list_applications()


def test_another_origin_is_refused_before_sending() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        evil = m.get("https://evil.example/steal", json={})
        with pytest.raises(QuamotionInsecureRequestError, match="own origin"):
            _hook().request("GET", "https://evil.example/steal")
        with pytest.raises(QuamotionInsecureRequestError):
            _hook().request("GET", "http://cloud.quamotion.mobi/api/version")
        assert evil.call_count == 0
        assert not any(r.hostname == "cloud.quamotion.mobi" for r in m.request_history)


def test_redirect_to_another_origin_drops_the_bearer() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", status_code=302, headers={"Location": "https://elsewhere.example/v"})
        other = m.get("https://elsewhere.example/v", json={"moved": True})
        assert _hook().get_version() == {"moved": True}
        assert "Authorization" not in other.last_request.headers


def test_plain_http_host_is_refused_unless_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(host="http://cloud.quamotion.mobi"))
    with pytest.raises(QuamotionConfigError, match="plain http"):
        _ = _hook().settings
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(host="http://127.0.0.1:8080"))
    assert _hook().settings.base_url == "http://127.0.0.1:8080"


def test_verify_governs_every_call_whatever_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    ca = tmp_path / "ca.pem"
    ca.write_text("dummy")
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(verify=str(ca)))
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        _hook().get_version()
        assert {r.verify for r in m.request_history} == {str(ca)}
    reset_process_caches()
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(verify="false"))
    with rm.Mocker() as m, caplog.at_level(logging.WARNING):
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        _hook().get_version()
        assert {r.verify for r in m.request_history} == {False}
    assert "turns TLS verification off" in caplog.text
    reset_process_caches()
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        _hook().get_version()
        assert {r.verify for r in m.request_history} == {True}


def test_timeout_and_proxies_apply_to_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT",
        connection_json(timeout="12.5", proxies={"https": "http://proxy.local:3128"}),
    )
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={})
        _hook().get_version()
        assert {r.timeout for r in m.request_history} == {12.5}
        assert all(r.proxies.get("https") == "http://proxy.local:3128" for r in m.request_history)


# --- connection errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"login": None}, "no client ID"),
        ({"password": None}, "no client secret"),
        ({"host": "ftp://x"}, "not an http"),
        ({"host": "https://cloud.quamotion.mobi/some/path"}, "without a path"),
        ({"authority_host": "http://login.example"}, "must be an https URL"),
        ({"verify": "/no/such/ca.pem"}, "neither true/false nor an existing CA bundle"),
        ({"timeout": "soon"}, "positive number"),
        ({"proxies": "[1]"}, "proxies must be a JSON object"),
    ],
)
def test_malformed_connections_fail_clearly(
    monkeypatch: pytest.MonkeyPatch, conn: dict[str, object], message: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(**conn))
    with pytest.raises(QuamotionConfigError, match=message) as info:
        _ = _hook().settings
    assert SECRET not in str(info.value)


def test_extra_that_is_not_json_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = json.loads(connection_json())
    doc["extra"] = "{not json"
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(doc))
    if not compat.AIRFLOW_V_3_2_PLUS:
        # 3.0/3.1's env-var backend drops such a connection itself; 3.0 says it is not defined, 3.1 then
        # asks the supervisor, which a test process has not
        with pytest.raises((compat.AirflowException, ImportError), match="isn't defined|SUPERVISOR_COMMS"):
            _ = _hook().settings
        return
    with pytest.raises(QuamotionConfigError, match="extra field is not valid JSON"):
        _ = _hook().settings


def test_ui_form_extra_names_and_corrections_are_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    doc = json.loads(connection_json())
    doc["extra"] = {
        "extra__quamotion__tenant_id": "tid",
        "extra__quamotion__project": "acme",
        "extra__quamotion__resource": "https://cloud.quamotion.mobi",
    }
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        settings = _hook().settings
    assert settings.tenant_id == "tid"
    assert settings.project == "acme"
    assert settings.resource == "https://cloud.quamotion.mobi/"
    assert settings.scope == "https://cloud.quamotion.mobi//.default"
    assert "lacks the trailing slash" in caplog.text


def test_missing_tenant_uses_common_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    doc = json.loads(connection_json())
    doc["extra"] = {}
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        settings = _hook().settings
    assert settings.tenant_id == "common"
    assert settings.authority == "https://login.microsoftonline.com/common"
    assert "usually needs a specific tenant" in caplog.text


# --- replies and resources ---------------------------------------------------------------------------


def test_non_json_reply_is_a_clear_error() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(
            f"{HOST}/project/acme/api/app",
            text="<html><body>Sign in</body></html>",
            headers={"Content-Type": "text/html"},
        )
        with pytest.raises(QuamotionResponseError, match=r"not JSON \(Content-Type text/html\).*Sign in"):
            _hook().list_applications()


def test_error_bodies_never_show_tokens(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", status_code=500, text=f"echo: Authorization: Bearer {TOKEN}")
        with pytest.raises(QuamotionApiError) as info:
            _hook().get_version()
    assert TOKEN not in str(info.value)
    assert "Bearer ***" in str(info.value)


def test_iter_records_streams_bare_and_wrapped_arrays() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(f"{HOST}/project/acme/api/testRun", text=json.dumps([{"testRunId": str(i)} for i in range(5)]))
        m.get(f"{HOST}/project/acme/api/app", text=json.dumps({"value": [{"appId": "a"}]}))
        hook = _hook()
        assert [r["testRunId"] for r in hook.iter_test_runs()] == ["0", "1", "2", "3", "4"]
        assert list(hook.iter_records("app")) == [{"appId": "a"}]


def test_get_test_run_filters_the_list_and_fails_clearly_when_absent() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(f"{HOST}/project/acme/api/testRun", json=[{"testRunId": "a"}, {"testRunId": "b", "x": 1}])
        assert _hook().get_test_run("b") == {"testRunId": "b", "x": 1}
        with pytest.raises(QuamotionNotFoundError, match="Test run 'zzz' does not exist"):
            _hook().get_test_run("zzz")


def test_upload_streams_a_multipart_files_part(tmp_path: Path) -> None:
    apk = tmp_path / "demo.apk"
    apk.write_bytes(b"PK\x03\x04" + b"x" * 100_000)
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        bodies: list[bytes] = []

        def reply(request: object, context: object) -> list[dict[str, str]]:
            bodies.append(request.body.read())  # type: ignore[attr-defined]
            return [{"appId": "demo", "version": "1"}]

        post = m.post(f"{HOST}/project/acme/api/app", json=reply)
        assert _hook().upload_application(apk) == {"appId": "demo", "version": "1"}
        request = post.last_request
        assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
        assert int(request.headers["Content-Length"]) == len(bodies[0]) > 100_000
        body = bodies[0]
        assert b'name="files"; filename="demo.apk"' in body
        assert b"x" * 100_000 in body


def test_upload_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(QuamotionConfigError, match="no such file"):
        _hook().upload_test_package(tmp_path / "missing.zip")


def test_artifacts_download_is_streamed_and_atomic(tmp_path: Path) -> None:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("screenshot.txt", "hello")
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(f"{HOST}/project/acme/api/job/7/artifacts", content=buffer.getvalue())
        target = tmp_path / "out" / "job-7.zip"
        assert _hook().download_job_artifacts(7, target) == str(target)
        assert zipfile.ZipFile(target).namelist() == ["screenshot.txt"]
        m.get(f"{HOST}/project/acme/api/job/8/artifacts", status_code=404, text="no artifacts")
        with pytest.raises(QuamotionNotFoundError):
            _hook().download_job_artifacts(8, tmp_path / "out" / "job-8.zip")
    assert sorted(os.listdir(tmp_path / "out")) == ["job-7.zip"]


def test_resource_methods_call_their_endpoints() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        p = f"{HOST}/project/acme/api"
        m.get(f"{p}/testPackage", json=[{"name": "pkg"}])
        m.get(f"{p}/deviceGroup", json=[{"deviceGroupId": "g"}])
        m.get(f"{p}/testRun/r1/jobs", json=[{"id": 1, "status": "success"}])
        m.get(f"{p}/job/1", json={"id": 1})
        m.get(f"{p}/job/1/log", text="line 1\nline 2\n")
        m.get(f"{p}/schedule", json=[{"id": 3}])
        delete = m.delete(f"{p}/schedule/3", status_code=204)
        start = m.post(f"{p}/testRun", json={"testRunId": "r2"})
        hook = _hook()
        assert hook.list_projects() == PROJECTS
        assert hook.list_test_packages() == [{"name": "pkg"}]
        assert hook.list_device_groups() == [{"deviceGroupId": "g"}]
        assert hook.list_jobs("r1") == [{"id": 1, "status": "success"}]
        assert hook.get_job(1) == {"id": 1}
        assert hook.get_job_log(1) == "line 1\nline 2\n"
        assert hook.list_schedules() == [{"id": 3}]
        hook.delete_schedule(3)
        assert delete.call_count == 1
        run = hook.start_test_run(
            {"appId": "a", "version": "1", "operatingSystem": "Android"},
            {"name": "pkg", "version": "0.1"},
            "g",
            parameters="-x",
            environment={"A": "1"},
        )
        assert run == {"testRunId": "r2"}
        sent = start.last_request.json()
        assert sent["deviceGroupId"] == "g"
        assert sent["testPackage"] == {"name": "pkg", "version": "0.1"}
        assert sent["testScriptEnvironmentVariables"] == {"A": "1"}
        assert sent["schedule"] == ""
    with pytest.raises(ValueError, match="not a valid path segment"):
        hook.get_job("../x")


GROUP_GUID = "4a7cf261-fa75-4a18-a564-718ebefba390"
GROUP = {
    "deviceGroupId": GROUP_GUID,
    "name": "physical-android-8",
    "displayName": "Physical Android 8",
    "devices": [{"deviceSelectionId": "d1", "name": "Nexus", "tags": ["android"], "variables": {}}],
    "variables": {"K": "V"},
}


def _start_with(device_group: Any, **kwargs: Any) -> tuple[dict[str, Any], rm.Mocker]:
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        p = f"{HOST}/project/acme/api"
        m.get(f"{p}/deviceGroup", json=[GROUP, {"deviceGroupId": "other", "name": "x"}])
        start = m.post(f"{p}/testRun", json={"testRunId": "r2"})
        _hook().start_test_run(
            {"appId": "a", "version": "1"}, {"name": "pkg", "version": "0.1"}, device_group, **kwargs
        )
        return start.last_request.json(), m


@pytest.mark.parametrize("ref", [GROUP_GUID, GROUP_GUID.upper(), "physical-android-8", GROUP])
def test_start_sends_device_group_id_and_the_whole_group(ref: Any) -> None:
    sent, _ = _start_with(ref)
    assert sent["deviceGroupId"] == GROUP_GUID
    assert sent["deviceGroup"] == {
        "deviceGroupId": GROUP_GUID,
        "name": "physical-android-8",
        "devices": GROUP["devices"],
        "variables": {"K": "V"},
    }


def test_start_with_an_ad_hoc_group_object_sends_it_whole() -> None:
    ad_hoc = {"deviceGroupId": "0b0f5f8e-7c5e-4a43-9a3f-2f1d3d3c9d11", "devices": [{"tags": ["ios"]}]}
    sent, m = _start_with(ad_hoc)
    assert sent["deviceGroupId"] == ad_hoc["deviceGroupId"]
    assert sent["deviceGroup"] == ad_hoc
    assert not [r for r in m.request_history if r.url.endswith("/deviceGroup")]  # no lookup needed


def test_start_with_a_group_the_list_does_not_hold_sends_it_as_given() -> None:
    sent, _ = _start_with("some-name")
    assert sent["deviceGroupId"] == "some-name"
    assert sent["deviceGroup"] == {"name": "some-name"}


def test_start_omits_results_callback_unless_given() -> None:
    sent, _ = _start_with(GROUP)
    assert "resultsCallBack" not in sent
    assert "" not in [v for v in sent.values() if isinstance(v, dict) for v in v.values()]
    sent, _ = _start_with(GROUP, results_callback={"apiKey": "k", "endPoint": "https://ci.example/cb"})
    assert sent["resultsCallBack"] == {"apiKey": "k", "endPoint": "https://ci.example/cb"}
    sent, _ = _start_with(GROUP, results_callback={"apiKey": "", "endPoint": ""})
    assert "resultsCallBack" not in sent


def test_the_payload_has_one_builder() -> None:
    body = api.create_test_run_request(
        {"appId": "a"}, {"name": "p", "version": "1"}, GROUP, schedule="0 6 * * *"
    )
    assert body == {
        "app": {"appId": "a"},
        "testPackage": {"name": "p", "version": "1"},
        "deviceGroupId": GROUP_GUID,
        "deviceGroup": api.device_group_object(GROUP),
        "schedule": "0 6 * * *",
        "testScriptParameters": "",
        "testScriptEnvironmentVariables": {},
    }


def test_test_connection_reports_success_and_failure() -> None:
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", json={"version": "2.0"})
        ok, message = _hook().test_connection()
    assert ok
    assert "version" in message
    reset_process_caches()
    with rm.Mocker() as m:
        mock_aad_error(
            m, 401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"}
        )
        ok, message = _hook().test_connection()
    assert not ok
    assert "AADSTS7000215" in message
    assert SECRET not in message


def test_importing_and_building_the_hook_touches_no_network_and_no_msal() -> None:
    code = (
        "import sys, socket\n"
        "def boom(*a, **k): raise AssertionError('network call')\n"
        "socket.socket.connect = boom\n"
        "from airflow_provider_quamotion.hooks.quamotion import QuamotionHook\n"
        "QuamotionHook('quamotion_default', timeout=3)\n"
        "assert 'msal' not in sys.modules, 'msal imported'\n"
        "print('clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "clean" in out.stdout


def test_token_requests_are_retried_on_5xx_and_drops(sleeps: list[float]) -> None:
    with rm.Mocker() as m:
        base = f"{AUTHORITY}/{TENANT}"
        m.get(
            f"{base}/v2.0/.well-known/openid-configuration",
            [
                {"exc": requests.ConnectionError("reset")},
                {
                    "json": {
                        "authorization_endpoint": f"{base}/a",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                    }
                },
            ],
        )
        token = m.post(
            f"{base}/oauth2/v2.0/token",
            [
                {"status_code": 503, "headers": {"Retry-After": "2"}},
                {"exc": requests.ConnectionError("dropped")},
                {"json": {"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}},
            ],
        )
        m.get(f"{HOST}/api/version", json={"ok": 1})
        assert _hook().get_version() == {"ok": 1}
        assert token.call_count == 3
    assert len(sleeps) == 3
    assert 2.0 in sleeps


def test_retry_policy_from_the_connection_extra(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT",
        connection_json(retry={"max_attempts": 2, "backoff_initial": 0.01, "retry_statuses": [503]}),
    )
    hook = QuamotionHook()
    assert hook.settings.retry == RetryPolicy(
        max_attempts=2, backoff_initial=0.01, retry_statuses=frozenset({503})
    )
    with rm.Mocker() as m:
        mock_aad(m)
        api = m.get(f"{HOST}/api/version", status_code=503)
        with pytest.raises(QuamotionApiError, match="HTTP 503"):
            hook.get_version()
        assert api.call_count == 2
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(retry={"attempts": 2}))
    with pytest.raises(QuamotionConfigError, match="retry must be an object with some of"):
        _ = QuamotionHook().settings


def test_retry_log_names_the_status_of_each_attempt(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    with rm.Mocker() as m, caplog.at_level(logging.WARNING):
        mock_aad(m)
        m.get(f"{HOST}/api/version", [{"status_code": 429}, {"exc": requests.ReadTimeout("x")}, {"json": {}}])
        _hook().get_version()
    assert "attempt 1 of 4 failed (HTTP 429)" in caplog.text
    assert "attempt 2 of 4 failed (ReadTimeout)" in caplog.text
    assert "after every retry" not in caplog.text


def test_a_deadline_bounds_retries_and_timeouts(sleeps: list[float]) -> None:
    import time as clock

    with rm.Mocker() as m:
        mock_aad(m)
        api = m.get(f"{HOST}/api/version", status_code=503, headers={"Retry-After": "5"})
        hook = _hook(retry=RetryPolicy(max_attempts=6))
        with pytest.raises(QuamotionApiError, match="HTTP 503"):
            hook.request("GET", "/api/version", deadline=clock.time() + 2)
        assert api.call_count == 1  # a 5 s wait would pass the deadline: no retry starts
        assert sleeps == []
        assert 0 < api.last_request.timeout <= 2
        with pytest.raises(QuamotionTimeoutError, match="deadline passed before the request was sent"):
            hook.request("GET", "/api/version", deadline=clock.time() - 1)
        assert api.call_count == 1


def test_whole_body_reads_have_a_byte_budget(mocked_connection: None) -> None:
    from airflow_provider_quamotion.transport.jsonio import QuamotionResponseTooLargeError

    huge = b"[" + b'"xxxxxxxxxxxxxxxx",' * 1_000_000 + b'"end"]'  # ~19 MB of JSON
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        m.get(f"{HOST}/project/acme/api/deviceGroup", content=huge)
        m.get(f"{HOST}/api/version", content=huge)
        m.get(f"{HOST}/project/acme/api/job/7/log", content=b"line\n" * 100)
        hook = _hook()
        with pytest.raises(QuamotionResponseTooLargeError, match="budget"):
            hook.list_device_groups()
        with pytest.raises(QuamotionResponseTooLargeError, match="budget"):
            hook.get_version()
        with pytest.raises(QuamotionResponseTooLargeError, match="budget"):
            hook.get_job_log(7, max_bytes=100)
        assert hook.get_job_log(7) == "line\n" * 100
        assert len(hook.get_json("deviceGroup", max_bytes=len(huge))) == 1_000_001


def test_stream_job_log_lines_and_budget_with_requests_mock() -> None:
    """``log/live`` as the Bitrise step reads it: lines as they come, cut at the byte budget."""
    log = (
        "Quamotion runner: job 58189675\r\nInstalling demo.quamotion.Acquaint 151\nScenario 1: passed\n"
        "Job finished: failed"  # no final newline: the last line still comes
    )
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        live = m.get(f"{HOST}/project/acme/api/job/58189675/log/live", content=log.encode())
        hook = _hook()
        assert list(hook.stream_job_log(58189675)) == [
            "Quamotion runner: job 58189675",
            "Installing demo.quamotion.Acquaint 151",
            "Scenario 1: passed",
            "Job finished: failed",
        ]
        assert list(hook.stream_job_log(58189675, max_bytes=40)) == [
            "Quamotion runner: job 58189675",
            "Installi",  # the last partial line, cut at the budget (32 + 8 bytes)
        ]
        assert live.call_count == 2
        with pytest.raises(ValueError, match="max_bytes"):
            list(hook.stream_job_log(1, max_bytes=-1))
