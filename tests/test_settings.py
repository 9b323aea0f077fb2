"""Connection -> settings: pure parsing and validation rules."""

from __future__ import annotations

import pytest

from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.settings import (
    RetryPolicy,
    extra_value,
    is_loopback,
    origin_of,
    settings_from_connection,
)


def _settings(**changes: object):  # type: ignore[no-untyped-def]
    fields = {"conn_id": "c", "host": None, "login": "id", "password": "pw", "extra": {"tenant_id": "t"}}
    fields.update(changes)
    return settings_from_connection(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://Cloud.Quamotion.mobi/api/x", "https://cloud.quamotion.mobi"),
        ("https://cloud.quamotion.mobi:443/", "https://cloud.quamotion.mobi"),
        ("http://127.0.0.1:8080/x", "http://127.0.0.1:8080"),
        ("https://[::1]:9/x", "https://[::1]:9"),
    ],
)
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def test_loopback_hosts() -> None:
    assert is_loopback("http://localhost:1/x")
    assert is_loopback("http://[::1]/")
    assert not is_loopback("http://127.0.0.2/")
    assert not is_loopback("https://cloud.quamotion.mobi")


def test_extra_value_reads_bare_and_form_names() -> None:
    assert extra_value({"project": "a"}, "project") == "a"
    assert extra_value({"extra__quamotion__project": "b"}, "project") == "b"
    assert extra_value({"project": "", "extra__quamotion__project": "c"}, "project") == "c"
    assert extra_value({}, "project") is None


def test_defaults_and_host_forms() -> None:
    settings = _settings()
    assert settings.base_url == "https://cloud.quamotion.mobi"
    assert settings.authority == "https://login.microsoftonline.com/t"
    assert settings.scope == "https://cloud.quamotion.mobi//.default"
    assert settings.timeout == 60.0
    assert settings.verify is True
    assert _settings(host="cloud.example.com").base_url == "https://cloud.example.com"
    assert _settings(host="https://h.example/", port=8443).base_url == "https://h.example:8443"


def test_overrides_win_and_unknown_ones_are_refused() -> None:
    settings = _settings(overrides={"timeout": 5, "project": "p", "retry": RetryPolicy(max_attempts=2)})
    assert (settings.timeout, settings.project, settings.retry.max_attempts) == (5.0, "p", 2)
    with pytest.raises(QuamotionConfigError, match="Unknown Quamotion setting"):
        _settings(overrides={"timeot": 5})


def test_api_key_alone_is_enough_and_wins_only_without_client_credentials() -> None:
    assert _settings(login=None, password=None, extra={"api_key": "k"}).uses_api_key
    assert not _settings(extra={"api_key": "k", "tenant_id": "t"}).uses_api_key


def test_secrets_are_not_in_repr() -> None:
    settings = _settings(password="very-secret-pw", extra={"api_key": "very-secret-key", "tenant_id": "t"})
    assert "very-secret" not in repr(settings)
    assert set(settings.secrets()) == {"very-secret-pw", "very-secret-key"}


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        ('{"max_attempts": 3}', RetryPolicy(max_attempts=3)),
        ({"retry_statuses": [429]}, RetryPolicy(retry_statuses=frozenset({429}))),
    ],
)
def test_retry_from_extra(retry: object, expected: RetryPolicy) -> None:
    assert _settings(extra={"tenant_id": "t", "retry": retry}).retry == expected


@pytest.mark.parametrize("retry", ["[1]", {"max_attempts": 0}, {"max_attempts": "many"}])
def test_bad_retry_is_a_clear_error(retry: object) -> None:
    with pytest.raises(QuamotionConfigError, match="retry"):
        _settings(extra={"tenant_id": "t", "retry": retry})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"port": 99999}, "not a port number"),
        ({"port": "abc"}, "not a port number"),
        ({"port": -1}, "not a port number"),
        ({"extra": {"tenant_id": "t", "timeout": "nan"}}, "positive number"),
        ({"extra": {"tenant_id": "t", "timeout": "inf"}}, "positive number"),
        ({"extra": {"tenant_id": "t", "timeout": -5}}, "positive number"),
        ({"extra": {"tenant_id": "t", "timeout": True}}, "positive number"),
        ({"extra": {"tenant_id": "t", "retry": {"retry_statuses": ["5xx"]}}}, "list of HTTP status codes"),
        ({"extra": {"tenant_id": "t", "retry": {"retry_statuses": "503"}}}, None),
        ({"extra": {"tenant_id": "t", "retry": {"retry_statuses": [700]}}}, "list of HTTP status codes"),
        ({"extra": {"tenant_id": "t", "verify": "/no/such/ca.pem"}}, "neither true/false"),
        ({"host": "https://a\\@cloud.quamotion.mobi"}, "backslash"),
        ({"host": "https://user:pw@cloud.quamotion.mobi"}, "userinfo"),
        ({"host": "https://cloud.quamotion.mobi:0x1bb"}, "port"),
        ({"host": "https://clou d.example"}, "whitespace"),
    ],
)
def test_malformed_fields_are_one_config_error_before_any_request(
    changes: dict[str, object], message: str | None
) -> None:
    if message is None:  # a single status given as a string is read as that one status
        assert _settings(**changes).retry.retry_statuses == frozenset({503})
        return
    with pytest.raises(QuamotionConfigError, match=message):
        _settings(**changes)


def test_a_valid_port_is_added_to_the_host() -> None:
    assert _settings(host="https://cloud.example", port=8443).base_url == "https://cloud.example:8443"
    assert _settings(host="https://cloud.example", port=0).base_url == "https://cloud.example"


def test_identity_differs_by_every_credential() -> None:
    base = _settings(extra={"tenant_id": "t", "api_key": "key-number-one"})
    other_key = _settings(extra={"tenant_id": "t", "api_key": "key-number-two"})
    other_secret = _settings(password="pw2", extra={"tenant_id": "t", "api_key": "key-number-one"})
    proxied = _settings(
        extra={"tenant_id": "t", "api_key": "key-number-one", "proxies": {"https": "http://p:1"}}
    )
    identities = {s.identity() for s in (base, other_key, other_secret, proxied)}
    assert len(identities) == 4
    assert not any("key-number" in part or part == "pw" for part in base.identity())


# --- the time zone of an offsetless ``scheduled`` ----------------------------------------------------


def test_scheduled_timezone_defaults_to_utc() -> None:
    import datetime as dt

    s = _settings()
    assert s.scheduled_timezone == "UTC" and s.scheduled_tzinfo is dt.timezone.utc


@pytest.mark.parametrize(
    "extra",
    [
        {"tenant_id": "t", "scheduled_timezone": "Europe/Brussels"},
        {"tenant_id": "t", "extra__quamotion__scheduled_timezone": " Europe/Brussels "},
    ],
)
def test_scheduled_timezone_from_the_extra(extra: dict[str, str]) -> None:
    s = _settings(extra=extra)
    assert s.scheduled_timezone == "Europe/Brussels"
    assert str(s.scheduled_tzinfo) == "Europe/Brussels"
    assert "scheduled_timezone='Europe/Brussels'" in repr(s)


def test_scheduled_timezone_override_wins_and_empty_is_utc() -> None:
    extra = {"tenant_id": "t", "scheduled_timezone": "Europe/Brussels"}
    assert _settings(extra=extra, overrides={"scheduled_timezone": "Asia/Tokyo"}).scheduled_timezone == (
        "Asia/Tokyo"
    )
    assert _settings(extra={"tenant_id": "t", "scheduled_timezone": ""}).scheduled_timezone == "UTC"


@pytest.mark.parametrize("bad", ["CET+1", "Mars/Olympus", "../../etc/passwd", "Europe/"])
def test_unknown_scheduled_timezone_is_refused_up_front_with_the_fix(bad: str) -> None:
    with pytest.raises(QuamotionConfigError, match="scheduled_timezone=.*IANA name such as 'UTC'") as err:
        _settings(extra={"tenant_id": "t", "scheduled_timezone": bad})
    assert "Connection 'c'" in str(err.value)


def test_scheduled_timezone_is_checked_when_built_directly() -> None:
    from airflow_provider_quamotion.settings import QuamotionSettings

    with pytest.raises(QuamotionConfigError, match="scheduled_timezone"):
        QuamotionSettings(client_id="a", client_secret="b", scheduled_timezone="Nowhere/Land")
