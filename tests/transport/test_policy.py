"""The destination rule: a URL is sent only where every parser that could open its socket agrees."""

from __future__ import annotations

import aiohttp
import pytest
import requests_mock as rm
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url
from yarl import URL

from airflow_provider_quamotion.exceptions import (
    QuamotionError,
    QuamotionInsecureRequestError,
    QuamotionTimeoutError,
)
from airflow_provider_quamotion.settings import RetryPolicy, settings_from_connection
from airflow_provider_quamotion.transport.policy import (
    Retrier,
    RetryableFailure,
    check_destination,
    destination_of,
    dropped_retry_after,
    needs_api_root,
    request_label,
    resolve_url,
    retrier,
    transport_error,
    wait_seconds,
)
from airflow_provider_quamotion.transport.sync import QuamotionSession
from tests.mocks import HOST

BASE = "https://own.example:8443"
OWN = ("own.example", 8443)


def _root() -> str:
    return "/project/acme/api/"


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://other.example:8443\\@own.example:8443/api/version",  # urllib.parse: own; urllib3: other
        "https://other.example\\@own.example:8443/api/version",
        "https://user:pw@own.example:8443/api/version",  # userinfo
        "https://own.example:8443@other.example/api/version",
        "https://own%2eexample:8443/api/version",  # percent-encoding in the host
        "https://own.example:08443x/api/version",
        "https://own.example:99999/api/version",
        "https://own.example :8443/api/version",
        "https://own.example:8443\t/api/version",
        "//other.example/api/version",
        "http://own.example:8443/api/version",  # plain http off loopback
        "ftp://own.example:8443/x",
    ],
)
def test_ambiguous_or_foreign_endpoints_are_refused(endpoint: str) -> None:
    with pytest.raises(QuamotionInsecureRequestError):
        resolve_url(BASE, endpoint, _root)


def test_only_project_relative_endpoints_need_the_api_root() -> None:
    looked_up: list[str] = []

    def root() -> str:
        looked_up.append("x")
        return _root()

    assert resolve_url(BASE, "testRun", root) == BASE + "/project/acme/api/testRun"
    assert resolve_url(BASE, " /api/version ", root) == BASE + "/api/version"
    assert resolve_url(BASE, BASE + "/api/version", root) == BASE + "/api/version"
    assert looked_up == ["x"]  # the root was asked for once: for the project-relative endpoint
    assert [needs_api_root(e) for e in ("testRun", "/api/version", BASE + "/x", "mailto:x")] == [
        True,
        False,
        False,
        False,
    ]


def test_a_remembered_resolution_never_remembers_a_refusal() -> None:
    bad = "https://other.example/api/version"
    for _ in range(2):  # refused every time, not once then served from the cache
        with pytest.raises(QuamotionInsecureRequestError):
            resolve_url(BASE, bad, _root)
    # the same endpoint resolves against each base it is given: the cache is keyed by all inputs
    assert resolve_url(BASE, "testRun", _root) != resolve_url("https://own.example:9443", "testRun", _root)
    with pytest.raises(QuamotionInsecureRequestError):
        resolve_url("https://own.example:9443", BASE + "/api/version", _root)


def test_a_timeout_at_the_caller_s_deadline_is_the_deadline_s_not_the_server_s() -> None:
    timeout = TimeoutError()
    cut = transport_error("GET", BASE + "/api/testRun", timeout, time_left=0.0)
    assert isinstance(cut, QuamotionTimeoutError) and "deadline passed" in str(cut)
    slow = transport_error("GET", BASE + "/api/testRun", timeout, time_left=20.0)
    assert isinstance(slow, QuamotionError) and not isinstance(slow, QuamotionTimeoutError)
    assert "Raise 'timeout'" in str(slow)
    assert "Raise 'timeout'" in str(transport_error("GET", BASE + "/x", timeout))  # no deadline
    refused = transport_error("GET", BASE + "/x", ConnectionRefusedError(), time_left=0.0)
    assert not isinstance(refused, QuamotionTimeoutError)  # only a timeout is the deadline's


def test_a_request_is_named_by_its_method_and_path_never_its_query() -> None:
    assert request_label("get", BASE + "/api/testRun?token=s3cret#x") == "GET /api/testRun"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://own.example:8443/api/version", ("https", "own.example", 8443)),
        ("https://OWN.example:8443", ("https", "own.example", 8443)),
        ("https://cloud.quamotion.mobi/x", ("https", "cloud.quamotion.mobi", 443)),
        ("http://127.0.0.1:5000/", ("http", "127.0.0.1", 5000)),
        ("https://[::1]:8443/x", ("https", "::1", 8443)),
    ],
)
def test_plain_urls_are_read_alike(url: str, expected: tuple[str, str, int]) -> None:
    assert destination_of(url) == expected


def test_plain_http_is_allowed_on_loopback_only() -> None:
    check_destination("http://127.0.0.1:5000/api/version", "http://127.0.0.1:5000")
    with pytest.raises(QuamotionInsecureRequestError, match="travels only over https"):
        check_destination("http://10.1.2.3/api/version", "http://10.1.2.3")


_PIECES = st.sampled_from(
    [
        "https://",
        "http://",
        "//",
        "own.example",
        "other.example",
        "127.0.0.1",
        "[::1]",
        ":8443",
        ":443",
        ":",
        "@",
        "\\",
        "/",
        "%2e",
        "%40",
        "#",
        "?",
        " ",
        "\t",
        "user:pw",
        "api/version",
        "..",
        ".",
        "testRun",
        "\u3002",  # ideographic full stop: a dot to IDNA-aware parsers
        "\uff20",  # fullwidth @
    ]
)


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.text(max_size=3)), min_size=1, max_size=10).map("".join))
def test_any_endpoint_is_refused_or_connects_to_the_own_origin(endpoint: str) -> None:
    try:
        url = resolve_url(BASE, endpoint, _root)
    except QuamotionError:
        return
    u3 = parse_url(url)
    assert ((u3.host or "").lower(), u3.port or 443) == OWN, url
    yu = URL(url)  # how aiohttp, the async client, reads it
    assert ((yu.raw_host or "").lower(), yu.port or 443) == OWN, url
    assert yu.scheme == "https" and (u3.scheme or "") == "https", url


def test_retry_after_zero_still_pauses_a_little_longer_each_attempt() -> None:
    policy = RetryPolicy(min_wait=0.1, backoff_max=30)
    assert [wait_seconds(policy, n, 0.0) for n in (1, 2, 3, 4, 9)] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert wait_seconds(policy, 1, 5.0) == 5.0  # a longer Retry-After wins
    assert wait_seconds(RetryPolicy(min_wait=0.1, backoff_max=0.15), 5, 0.0) == 0.15  # capped


def test_retries_are_bounded_by_time_as_well_as_by_count() -> None:
    policy = RetryPolicy(max_attempts=10, min_wait=0.1, backoff_max=1, retry_budget=0.25)
    settings = settings_from_connection(
        conn_id="c",
        host=HOST,
        login=None,
        password=None,
        extra={"api_key": "unused-key-123"},
        overrides={"retry": policy},
    )
    with rm.Mocker() as m:
        api = m.get(f"{HOST}/api/version", status_code=503, headers={"Retry-After": "0"})
        with pytest.raises(QuamotionError, match="503"), QuamotionSession(settings) as session:
            session.get("/api/version")
    # waits of 0.1 then 0.2 s: the second retry would end past the 0.25 s budget, so it never starts
    assert api.call_count == 2


def test_the_default_policy_outlasts_a_burst_of_faults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts >= 10 and policy.retry_budget >= 30 and policy.min_wait > 0


def test_a_connection_dropped_without_reply_is_retried_after_the_small_floor() -> None:
    import http.client

    import requests

    dropped = requests.ConnectionError("Connection aborted.")
    dropped.__cause__ = http.client.RemoteDisconnected("Remote end closed connection without response")
    assert dropped_retry_after(dropped) == 0.0
    assert dropped_retry_after(aiohttp.ServerDisconnectedError()) == 0.0
    # a refused connection or a timeout keeps the exponential backoff: the server may be struggling
    assert dropped_retry_after(requests.ConnectionError("Connection refused")) is None
    assert dropped_retry_after(aiohttp.SocketTimeoutError("timed out")) is None


def test_one_retrier_per_policy_and_its_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(max_attempts=3, min_wait=0.1)
    assert retrier(policy) is retrier(RetryPolicy(max_attempts=3, min_wait=0.1))
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise RetryableFailure(QuamotionError("HTTP 503"), retry_after=0.0)
        return "ok"

    assert Retrier(policy).call("GET", f"{HOST}/api/version", flaky) == "ok"
    assert slept == [0.1, 0.2]

    def failing() -> str:
        raise RetryableFailure(QuamotionError("HTTP 503"), retry_after=0.0)

    with pytest.raises(RetryableFailure):
        Retrier(policy).call("GET", f"{HOST}/api/version", failing)
    assert len(slept) == 4  # 3 attempts, 2 waits, then the last failure is raised
    # a deadline closer than the next wait stops the retries
    with pytest.raises(RetryableFailure):
        Retrier(policy).call("GET", f"{HOST}/api/version", failing, lambda: 0.05)
    assert len(slept) == 4


async def test_the_async_loop_waits_without_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    slept: list[float] = []

    async def no_sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", no_sleep)
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableFailure(QuamotionError("HTTP 429"), retry_after=2.0)
        return "ok"

    assert await retrier(RetryPolicy()).acall("GET", f"{HOST}/api/version", flaky) == "ok"
    assert slept == [2.0]
