"""A bad-input matrix: each mistake ends in one clear message that says what is wrong (and never a secret)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests_mock as rm

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionApiError,
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionError,
    QuamotionInsecureRequestError,
    QuamotionNotFoundError,
    QuamotionResponseError,
)
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.settings import RetryPolicy
from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger
from tests.mocks import connection_json, mock_aad, mock_projects

FAST = RetryPolicy(max_attempts=2, backoff_initial=0.01, backoff_max=0.02)


def use_connection(monkeypatch: pytest.MonkeyPatch, sb: Sandbox, **changes: Any) -> dict[str, Any]:
    """Point ``quamotion_default`` at the sandbox with some fields changed (``None`` removes a field)."""
    conn = json.loads(sb.connection_json)
    extra = conn.pop("extra")
    for key, value in changes.items():
        target = conn if key in ("host", "login", "password", "port") else extra
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(conn))
    return conn


def failure(call: Callable[[], Any], expected: type[BaseException] = QuamotionError) -> str:
    """The message ``call`` fails with; also checks it is one line-ish and holds no secret."""
    with pytest.raises(expected) as info:
        call()
    return str(info.value)


def assert_clean(message: str, sb: Sandbox) -> None:
    assert sb.client_secret not in message
    assert sb.api_key not in message
    assert "eyJ" not in message  # no token (JWT)
    assert "Traceback" not in message


# --- connection fields missing or malformed --------------------------------------------------------


CONNECTION_CASES = [
    pytest.param({"login": None, "api_key": None}, "has no client ID (login)", id="no-client-id"),
    pytest.param({"password": None, "api_key": None}, "has no client secret (password)", id="no-secret"),
    pytest.param({"host": "ftp://cloud.example"}, "is not an http(s) URL", id="host-not-http"),
    pytest.param(
        {"host": "https://cloud.example/project/x"}, "must be a base URL without a path", id="host-path"
    ),
    pytest.param({"host": "http://cloud.quamotion.mobi"}, "uses plain http", id="http-host"),
    pytest.param({"timeout": "soon"}, "timeout='soon' must be a positive number", id="timeout"),
    pytest.param({"verify": "/no/such/ca.pem"}, "neither true/false nor an existing CA bundle", id="verify"),
    pytest.param({"authority_host": "http://login.example"}, "must be an https URL", id="authority-http"),
    pytest.param({"proxies": "proxy:3128"}, "proxies must be a JSON object", id="proxies"),
]


@pytest.mark.parametrize(("changes", "message"), CONNECTION_CASES)
def test_malformed_connection_fields_fail_before_any_request(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], message: str
) -> None:
    use_connection(monkeypatch, sandbox_conn, **changes)
    text = failure(lambda: QuamotionHook().get_version(), QuamotionConfigError)
    assert message in text
    assert "quamotion_default" in text  # names the connection to fix
    assert_clean(text, sandbox_conn)
    assert sandbox_conn.counters()["requests"] == 0


def test_extra_that_is_not_json_is_one_clear_message(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = json.loads(sandbox_conn.connection_json)
    conn["extra"] = "{tenant_id: nope"
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(conn))
    text = failure(lambda: QuamotionHook().get_version(), QuamotionConfigError)
    assert "the extra field is not valid JSON" in text
    assert_clean(text, sandbox_conn)


# --- credentials the identity provider or the API refuses ------------------------------------------


def test_wrong_tenant(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, tenant_id=str(uuid.uuid4()), api_key=None)
    text = failure(lambda: QuamotionHook(retry=FAST).get_version(), QuamotionAuthError)
    # msal fails while discovering the unknown tenant's authority, before any token request.
    assert "does not know the tenant" in text
    assert "AADSTS90002" in text
    assert "Check tenant_id" in text  # the fix names the field
    assert_clean(text, sandbox_conn)


def test_wrong_client_secret(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, password="sbx~not-the-secret-at-all", api_key=None)
    text = failure(lambda: QuamotionHook(retry=FAST).get_version(), QuamotionAuthError)
    assert "AADSTS7000215" in text
    assert "client secret is wrong" in text
    assert "sbx~not-the-secret-at-all" not in text
    assert_clean(text, sandbox_conn)


def test_wrong_client_id(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, login=str(uuid.uuid4()), api_key=None)
    text = failure(lambda: QuamotionHook(retry=FAST).get_version(), QuamotionAuthError)
    assert "AADSTS700016" in text
    assert_clean(text, sandbox_conn)


def test_one_slash_resource_is_corrected_with_a_warning(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    use_connection(monkeypatch, sandbox_conn, resource="https://cloud.quamotion.mobi", api_key=None)
    with caplog.at_level(logging.WARNING):
        version = QuamotionHook().get_version()
    assert version["sandbox"] is True  # the corrected audience works
    warnings = [r.getMessage() for r in caplog.records if "trailing slash" in r.getMessage()]
    assert len(warnings) == 1
    assert "https://cloud.quamotion.mobi/" in warnings[0]


def test_wrong_api_key(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, login=None, password=None, api_key="sbx-wrong-key")
    text = failure(lambda: QuamotionHook(retry=FAST).get_version(), QuamotionAuthError)
    assert "Quamotion refused the API key" in text
    assert "sbx-wrong-key" not in text
    assert_clean(text, sandbox_conn)


def test_api_key_alone_works(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, login=None, password=None)
    assert QuamotionHook().get_version()["sandbox"] is True
    assert sandbox_conn.counters()["logins"] == 1


# --- what the API has not got ------------------------------------------------------------------------


def test_unknown_project(sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    use_connection(monkeypatch, sandbox_conn, project="no-such-project")
    text = failure(lambda: QuamotionHook().list_test_runs(), QuamotionNotFoundError)
    assert "Project 'no-such-project' is not visible to this account" in text
    assert "Visible projects: sandbox" in text


def test_unknown_test_run_in_the_hook(sandbox_conn: Sandbox) -> None:
    text = failure(lambda: QuamotionHook().get_test_run("no-such-run"), QuamotionNotFoundError)
    assert "Test run 'no-such-run' does not exist in this project" in text
    text = failure(lambda: QuamotionHook().list_jobs("no-such-run"), QuamotionNotFoundError)
    assert "404" in text
    assert "no-such-run" in text


def test_unknown_test_run_in_the_trigger(sandbox_conn: Sandbox) -> None:
    async def first() -> dict[str, Any]:
        trigger = QuamotionTestRunTrigger("no-such-run", poll_interval=0.1, deadline=time.time() + 30)
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    event = asyncio.run(first())
    assert event["status"] == "error"
    assert "Test run 'no-such-run' was not found" in event["message"]


def test_another_origin_is_refused(sandbox_conn: Sandbox) -> None:
    text = failure(
        lambda: QuamotionHook().request("GET", "https://evil.example/api/version"),
        QuamotionInsecureRequestError,
    )
    assert "goes only to the connection's own origin" in text
    assert sandbox_conn.counters()["by_path"].get("/api/version") is None


def test_a_reply_that_is_not_json(sandbox_conn: Sandbox) -> None:
    job_id = next(sandbox_conn.expected_jobs())[api.JOB_ID]
    text = failure(lambda: QuamotionHook().get_json(api.job_log(job_id)), QuamotionResponseError)
    assert "the reply is not JSON" in text
    assert "text/plain" in text


def test_a_reply_too_big_for_xcom_fails_the_operator_clearly(sandbox_conn: Sandbox) -> None:
    operator = QuamotionApiOperator(task_id="too_big", endpoint="testRun", max_xcom_bytes=10_000)
    text = failure(lambda: operator.execute(context={}), QuamotionConfigError)
    assert "over the XCom limit of 10000 bytes" in text
    assert "output_path" in text  # says what to do instead


# --- replies of a proxy or a wrong host (requests-mock) ---------------------------------------------

HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
)


@pytest.fixture
def mocked_cloud(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        mock_projects(m)
        yield m


def test_an_html_error_page(mocked_cloud: Any) -> None:
    mocked_cloud.get("https://cloud.quamotion.mobi/api/version", status_code=502, text=HTML_PAGE)
    text = failure(lambda: QuamotionHook(retry=FAST).get_version(), QuamotionApiError)
    assert "GET /api/version failed with HTTP 502" in text
    assert "Bad Gateway" in text
    assert "\n" not in text


def test_an_html_page_where_json_was_expected(mocked_cloud: Any) -> None:
    mocked_cloud.get(
        "https://cloud.quamotion.mobi/project/acme/api/testRun",
        text=HTML_PAGE.replace("502 Bad Gateway", "Sign in"),
        headers={"Content-Type": "text/html"},
    )
    text = failure(lambda: QuamotionHook(retry=FAST).list_test_runs(), QuamotionResponseError)
    assert "the reply is not JSON (Content-Type text/html)" in text
    assert "wrong host or path" in text


def test_a_list_that_is_not_a_list(mocked_cloud: Any) -> None:
    mocked_cloud.get("https://cloud.quamotion.mobi/project/acme/api/testRun", json={"error": "nope"})
    text = failure(lambda: QuamotionHook(retry=FAST).list_test_runs())
    assert "expected a JSON array" in text
