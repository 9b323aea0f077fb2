"""The destination rule: a URL is sent only where every parser that could open its socket agrees."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionInsecureRequestError
from airflow_provider_quamotion.transport.policy import check_destination, destination_of, resolve_url

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
    hx = httpx.URL(url)
    assert (hx.host.lower(), hx.port or 443) == OWN, url
    assert hx.scheme == "https" and (u3.scheme or "") == "https", url
