"""The transport policy's pure functions: URL resolution, guards, retry decisions, waits, errors."""

from __future__ import annotations

import email.utils

import pytest

from airflow_provider_quamotion.exceptions import (
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionInsecureRequestError,
    QuamotionNotFoundError,
    QuamotionRateLimitedError,
)
from airflow_provider_quamotion.settings import RetryPolicy
from airflow_provider_quamotion.transport import (
    check_destination,
    error_for_status,
    project_api_root,
    resolve_url,
    retry_after_seconds,
    retry_decision,
    wait_seconds,
)

BASE = "https://cloud.quamotion.mobi"


def _root() -> str:
    return "/project/acme/api/"


def _no_root() -> str:
    raise AssertionError("the project must not be looked up")


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("testRun", f"{BASE}/project/acme/api/testRun"),
        ("testRun/x/jobs", f"{BASE}/project/acme/api/testRun/x/jobs"),
        ("job/1/log?tail=1", f"{BASE}/project/acme/api/job/1/log?tail=1"),
    ],
)
def test_project_relative_endpoints(endpoint: str, url: str) -> None:
    assert resolve_url(BASE, endpoint, _root) == url


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("/api/version", f"{BASE}/api/version"),
        (f"{BASE}/api/project", f"{BASE}/api/project"),
        ("https://CLOUD.quamotion.mobi:443/api/x", "https://CLOUD.quamotion.mobi:443/api/x"),
    ],
)
def test_root_and_absolute_endpoints_need_no_project(endpoint: str, url: str) -> None:
    assert resolve_url(BASE, endpoint, _no_root) == url


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://evil.example/api",
        "//evil.example/api",
        "http://cloud.quamotion.mobi/api",
        "https://cloud.quamotion.mobi:8443/x",
    ],
)
def test_other_origins_are_refused(endpoint: str) -> None:
    with pytest.raises(QuamotionInsecureRequestError):
        resolve_url(BASE, endpoint, _no_root)


def test_empty_endpoint() -> None:
    with pytest.raises(QuamotionConfigError, match="endpoint is required"):
        resolve_url(BASE, " ", _no_root)


def test_http_is_allowed_for_loopback_only() -> None:
    check_destination("http://127.0.0.1:8080/api/version", "http://127.0.0.1:8080")
    check_destination("http://localhost/x", "http://localhost")
    with pytest.raises(QuamotionInsecureRequestError, match="plain http"):
        check_destination("http://10.0.0.5/x", "http://10.0.0.5")


def test_project_api_root() -> None:
    projects = [{"name": "acme", "relativeUrl": "/project/acme/"}]
    assert project_api_root(projects, None) == "/project/acme/api/"
    assert project_api_root({"value": projects}, "acme") == "/project/acme/api/"
    assert project_api_root([{"name": "b", "relativeUrl": "project/b"}], None) == "/project/b/api/"
    with pytest.raises(QuamotionConfigError, match="sees 0 Quamotion projects"):
        project_api_root([], None)
    with pytest.raises(QuamotionNotFoundError, match="'x' is not visible"):
        project_api_root(projects, "x")


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    now = 1_000_000.0
    assert retry_after_seconds(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(
        30, abs=1
    )
    assert retry_after_seconds(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_waits_grow_with_jitter_and_are_capped() -> None:
    policy = RetryPolicy(backoff_initial=1, backoff_max=8, retry_after_max=60)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (9, 8)]:
        waits = [wait_seconds(policy, attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len(set(waits)) > 1
    assert wait_seconds(policy, 1, 3.0) == 3.0
    assert wait_seconds(policy, 1, 3600.0) == 60.0


@pytest.mark.parametrize(
    ("method", "status", "sent", "expected"),
    [
        ("GET", 429, True, True),
        ("GET", 503, True, True),
        ("GET", 500, True, True),
        ("GET", 400, True, False),
        ("GET", 404, True, False),
        ("GET", None, True, True),
        ("POST", 429, True, True),
        ("POST", 503, True, False),
        ("POST", None, True, False),
        ("POST", None, False, True),
        ("PATCH", 502, True, False),
    ],
)
def test_retry_decisions(method: str, status: int | None, sent: bool, expected: bool) -> None:
    assert retry_decision(RetryPolicy(), method, status=status, sent=sent) is expected


def test_error_types() -> None:
    assert isinstance(error_for_status("GET", f"{BASE}/x", 401, b""), QuamotionAuthError)
    assert isinstance(error_for_status("GET", f"{BASE}/x", 403, b""), QuamotionAuthError)
    assert isinstance(error_for_status("GET", f"{BASE}/x", 404, b""), QuamotionNotFoundError)
    assert isinstance(error_for_status("GET", f"{BASE}/x", 429, b""), QuamotionRateLimitedError)
    long_body = "z" * 5000
    message = str(error_for_status("GET", f"{BASE}/x?token=abc", 500, long_body))
    assert message.startswith("GET /x failed with HTTP 500: zzz")
    assert len(message) < 400
    assert "abc" not in message


def test_invalid_retry_policy() -> None:
    with pytest.raises(QuamotionConfigError):
        RetryPolicy(max_attempts=0)
