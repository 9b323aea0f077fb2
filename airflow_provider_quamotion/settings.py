"""Connection -> settings: read a ``quamotion`` Airflow connection into one validated, immutable object.

Pure: no network call, no msal or requests import. Used by the sync hook (``get_connection``) and the
async hook (``aget_connection``) alike, so both read a connection by the same rules.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import tzinfo
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_quamotion import CONN_TYPE, api
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionInsecureRequestError,
    redact,
    register_secret,
)
from airflow_provider_quamotion.transport.policy import destination_of, is_loopback, origin_of

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
#: The zone an offsetless ``scheduled`` is read in unless the connection says otherwise.
DEFAULT_SCHEDULED_TIMEZONE = "UTC"


@dataclass(frozen=True)
class RetryPolicy:
    """How the transport retries: which failures, how often, how long it waits.

    Waits grow exponentially with full jitter, ``Retry-After`` (seconds or an HTTP date) wins when the
    server sends one, and every wait is capped. Idempotent methods retry on 429, 5xx, dropped
    connections and timeouts; POST, PATCH and DELETE only where the request certainly was
    not processed (429, connection refused, connect timeout), so remote work is never duplicated.

    :param max_attempts: attempts in all, the first included.
    :param backoff_initial: first exponential wait, seconds.
    :param backoff_max: cap of an exponential wait, seconds.
    :param retry_after_max: cap of a server-requested ``Retry-After`` wait, seconds.
    :param retry_statuses: HTTP statuses that are retried for idempotent methods.
    :param retry_budget: seconds since a request's first attempt after which no retry starts: retries
        are bounded by time as well as by count.
    :param min_wait: the smallest pause before a retry, even when the server says ``Retry-After: 0``
        (doubling per attempt up to four times this, capped at ``backoff_max``).
    """

    max_attempts: int = 10
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 300.0
    retry_statuses: frozenset[int] = frozenset({429, 500, 502, 503, 504})
    retry_budget: float = 60.0
    min_wait: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise QuamotionConfigError("RetryPolicy.max_attempts must be at least 1")
        waits = (
            self.backoff_initial,
            self.backoff_max,
            self.retry_after_max,
            self.retry_budget,
            self.min_wait,
        )
        if not all(isinstance(w, int | float) and math.isfinite(w) and w >= 0 for w in waits):
            raise QuamotionConfigError(
                "RetryPolicy waits and the retry budget must be finite and not negative"
            )


@dataclass(frozen=True)
class QuamotionSettings:
    """Everything a client needs to talk to Quamotion Cloud, read from a connection.

    :param base_url: API base URL, scheme and host (and port), no trailing slash.
    :param client_id: Azure AD application (client) ID.
    :param client_secret: Azure AD client secret.
    :param api_key: Quamotion API key, the alternative to client credentials.
    :param tenant_id: Azure AD tenant (GUID or domain).
    :param authority_host: Azure AD authority host.
    :param resource: token audience, with its trailing slash.
    :param project: project name; ``None`` picks the only project the account sees.
    :param verify: ``True``, ``False`` or a CA bundle path; governs every call.
    :param timeout: connect and read timeout of every call, seconds.
    :param proxies: ``{"https": url, "http": url}`` for every call.
    :param retry: the retry policy.
    :param scheduled_timezone: the IANA zone (``"Europe/Brussels"``) a test run's ``scheduled`` is in
        when it has no offset (the captured lists never carry one; most values are UTC, some local
        time); ``"UTC"`` by default. Windowed exports and the SQL ``_scheduled_utc`` follow it.
    """

    base_url: str = api.DEFAULT_HOST
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    tenant_id: str = api.DEFAULT_TENANT
    authority_host: str = api.DEFAULT_AUTHORITY_HOST
    resource: str = api.DEFAULT_RESOURCE
    project: str | None = None
    verify: bool | str = True
    timeout: float = DEFAULT_TIMEOUT
    proxies: Mapping[str, str] | None = field(default=None, repr=False)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    scheduled_timezone: str = DEFAULT_SCHEDULED_TIMEZONE

    def __post_init__(self) -> None:
        for secret in self.secrets():
            register_secret(secret)
        object.__setattr__(
            self, "scheduled_timezone", _timezone_name(self.scheduled_timezone, "scheduled_timezone")
        )

    @property
    def scheduled_tzinfo(self) -> tzinfo:
        """The zone of an offsetless ``scheduled`` (see :func:`api.parse_timestamp`)."""
        return api.zone(self.scheduled_timezone)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        proxies = {k: redact(v) for k, v in (self.proxies or {}).items()}
        return f"QuamotionSettings({shown}, proxies={proxies!r})"

    @property
    def scope(self) -> str:
        """The client-credentials scope: the resource + ``/.default`` (two slashes for Quamotion)."""
        return self.resource + "/.default"

    @property
    def authority(self) -> str:
        """The MSAL authority URL."""
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def origin(self) -> str:
        """``scheme://host[:port]`` of the API: the only place the bearer token may go (read once:
        every request checks its destination against it)."""
        return self.identity()[0]

    @property
    def uses_api_key(self) -> bool:
        """Whether tokens come from ``POST /api/login`` rather than Azure AD."""
        return bool(self.api_key) and not (self.client_id and self.client_secret)

    def secrets(self) -> tuple[str, ...]:
        """Secret values to keep out of every message and log: client secret, API key, proxy passwords."""
        proxy_passwords = [urlsplit(url).password for url in (self.proxies or {}).values()]
        return tuple(s for s in (self.client_secret, self.api_key, *proxy_passwords) if s)

    def identity(self) -> tuple[str, ...]:
        """The whole identity of these credentials, secrets hashed: what every process-wide cache
        (tokens, project roots, pooled clients) is keyed by, so two tenants never share an entry.

        Computed once per settings object (they are frozen): every request of every trigger asks.
        """
        cached: tuple[str, ...] | None = self.__dict__.get("_identity")
        if cached is None:
            proxies = json.dumps(sorted((self.proxies or {}).items()))
            cached = (
                origin_of(self.base_url),
                self.authority,
                self.client_id or "",
                _digest(self.client_secret),
                _digest(self.api_key),
                self.resource,
                repr(self.verify),
                _digest(proxies),
            )
            object.__setattr__(self, "_identity", cached)  # not a field: eq, repr and replace() ignore it
        return cached


def _digest(secret: str | None) -> str:
    return hashlib.sha256((secret or "").encode()).hexdigest()[:32]


def extra_value(extra: Mapping[str, Any], name: str) -> Any:
    """An extra field by bare name or as the UI form saved it (``extra__quamotion__<name>``)."""
    for key in (name, f"extra__{CONN_TYPE}__{name}"):
        value = extra.get(key)
        if value not in (None, ""):
            return value
    return None


def parse_extra(raw: str | Mapping[str, Any] | None, conn_id: str) -> dict[str, Any]:
    """The connection's extra as a dict, with a clear error when it is not a JSON object."""
    if raw in (None, ""):
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: the extra field is not valid JSON ({err.msg} at position {err.pos}). "
            'Set it to a JSON object such as {"tenant_id": "contoso.onmicrosoft.com"}.'
        ) from None
    if not isinstance(value, dict):
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: the extra field must be a JSON object, not {type(value).__name__}."
        )
    return value


def settings_from_connection(
    *,
    conn_id: str,
    host: str | None,
    login: str | None,
    password: str | None,
    extra: str | Mapping[str, Any] | None,
    port: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> QuamotionSettings:
    """Validate a connection's fields into :class:`QuamotionSettings`.

    ``overrides`` (the hook's keyword arguments) win over the connection's values.

    :raises QuamotionConfigError: with what is wrong and how to fix it.
    """
    ex = parse_extra(extra, conn_id)
    over = dict(overrides or {})
    unknown = set(over) - {f for f in QuamotionSettings.__dataclass_fields__}
    if unknown:
        raise QuamotionConfigError(
            f"Unknown Quamotion setting(s): {', '.join(sorted(unknown))}. "
            f"Known: {', '.join(QuamotionSettings.__dataclass_fields__)}."
        )

    def pick(name: str, value: Any = None) -> Any:
        if name in over and over[name] is not None:
            return over.pop(name)
        over.pop(name, None)
        return value if value not in (None, "") else extra_value(ex, name)

    base_url = _base_url(pick("base_url", host), port, conn_id)
    client_id = pick("client_id", login)
    client_secret = pick("client_secret", password)
    api_key = pick("api_key")
    if not api_key and not (client_id and client_secret):
        missing = "client ID (login)" if not client_id else "client secret (password)"
        raise QuamotionConfigError(
            f"Connection {conn_id!r} has no {missing}. Set the Azure AD application's client ID as the "
            "login and its client secret as the password, or set api_key in the extra."
        )
    tenant_id = str(pick("tenant_id") or "").strip()
    if not tenant_id:
        tenant_id = api.DEFAULT_TENANT
        if not api_key:
            log.warning(
                "Connection %r has no tenant_id; using %r as the vendor documents. Azure AD's "
                "client-credentials flow usually needs a specific tenant: set tenant_id in the extra to "
                "your tenant's GUID or domain (e.g. contoso.onmicrosoft.com).",
                conn_id,
                api.DEFAULT_TENANT,
            )
    authority_host = _https_url(
        pick("authority_host") or api.DEFAULT_AUTHORITY_HOST, "authority_host", conn_id
    )
    resource = str(pick("resource") or api.DEFAULT_RESOURCE).strip()
    if not resource.endswith("/"):
        log.warning(
            "Connection %r: resource %r lacks the trailing slash Quamotion Cloud's audience needs; using %r.",
            conn_id,
            resource,
            resource + "/",
        )
        resource += "/"
    project = pick("project")
    return QuamotionSettings(
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret,
        api_key=api_key,
        tenant_id=tenant_id,
        authority_host=authority_host,
        resource=resource,
        project=str(project).strip() if project else None,
        verify=_verify(pick("verify"), conn_id),
        timeout=_timeout(pick("timeout"), conn_id),
        proxies=_proxies(pick("proxies"), conn_id),
        retry=_retry(pick("retry"), conn_id),
        scheduled_timezone=_timezone_name(pick("scheduled_timezone"), "scheduled_timezone", conn_id),
    )


def with_overrides(settings: QuamotionSettings, **changes: Any) -> QuamotionSettings:
    """A copy of ``settings`` with some fields changed."""
    return replace(settings, **changes)


def _base_url(value: Any, port: Any, conn_id: str) -> str:
    text = str(value or api.DEFAULT_HOST).strip().rstrip("/")
    if "://" not in text:
        text = "https://" + text
    shown = redact(str(value))[:200]
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: host {shown!r} is not an http(s) URL. "
            f"Set it to the API base URL, e.g. {api.DEFAULT_HOST}."
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: host {shown!r} must be a base URL without a path; "
            "the project's path comes from the API (relativeUrl)."
        )
    try:
        scheme, _, _ = destination_of(text)
    except QuamotionInsecureRequestError as err:
        raise QuamotionConfigError(f"Connection {conn_id!r}: host is not usable. {err}") from None
    if port not in (None, "", 0) and parts.port is None:
        text = f"{scheme}://{parts.netloc}:{_port(port, conn_id)}"
    if scheme == "http" and not is_loopback(text):
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: host {shown!r} uses plain http; the bearer token travels only over "
            "https (plain http is allowed for loopback hosts alone). Use https://."
        )
    return text


def _timezone_name(value: Any, name: str, conn_id: str | None = None) -> str:
    """An IANA time zone name, checked now (``None`` / ``""``: UTC); its canonical spelling."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_SCHEDULED_TIMEZONE
    text = str(value).strip()
    try:
        api.zone(text)
    except ValueError as err:
        where = f"Connection {conn_id!r}: " if conn_id else ""
        raise QuamotionConfigError(
            f"{where}{name}={redact(text)[:100]!r} is not a time zone the system knows ({err}). Use an "
            "IANA name such as 'UTC', 'Europe/Brussels' or 'America/New_York' (the zone the service "
            "writes an offsetless test run 'scheduled' in), or leave it empty for UTC."
        ) from None
    return text


def _port(value: Any, conn_id: str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: port {value!r} is not a port number (1-65535); leave it empty for "
            "the scheme's default."
        )
    return int(text)


def _https_url(value: Any, name: str, conn_id: str) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: {name} {value!r} must be an https URL "
            f"(Azure AD and MSAL accept https only), e.g. {api.DEFAULT_AUTHORITY_HOST}."
        )
    return text


def _verify(value: Any, conn_id: str) -> bool | str:
    if value is None or value is True:
        return True
    if value is False:
        return False
    text = str(value).strip()
    if text.lower() in ("true", "yes", "1", "on"):
        return True
    if text.lower() in ("false", "no", "0", "off"):
        log.warning(
            "Connection %r turns TLS verification off: replies are not authenticated. "
            "Prefer verify=<path of a CA bundle>.",
            conn_id,
        )
        return False
    if not os.path.isfile(text):
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: verify={text!r} is neither true/false nor an existing CA bundle file."
        )
    return text


def _timeout(value: Any, conn_id: str) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = math.nan
    if not math.isfinite(timeout) or timeout <= 0 or isinstance(value, bool):
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: timeout={value!r} must be a positive number of seconds (finite), "
            f"e.g. {DEFAULT_TIMEOUT:g}."
        )
    return timeout


def _retry(value: Any, conn_id: str) -> RetryPolicy:
    """A retry policy from a :class:`RetryPolicy`, a dict or its JSON (``{"max_attempts": 3}``)."""
    if value in (None, "", {}):
        return RetryPolicy()
    if isinstance(value, RetryPolicy):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    known = set(RetryPolicy.__dataclass_fields__)
    if not isinstance(value, Mapping) or not set(value) <= known:
        raise QuamotionConfigError(
            f"Connection {conn_id!r}: retry must be an object with some of {', '.join(sorted(known))}, "
            'e.g. {"max_attempts": 3, "backoff_max": 10}.'
        )
    given = dict(value)
    if "retry_statuses" in given:
        statuses = given["retry_statuses"]
        if isinstance(statuses, str | bytes) or not hasattr(statuses, "__iter__"):
            statuses = [statuses]
        if not all(str(s).strip().isdigit() and 100 <= int(str(s)) <= 599 for s in statuses):
            raise QuamotionConfigError(
                f"Connection {conn_id!r}: retry.retry_statuses={given['retry_statuses']!r} must be a list "
                "of HTTP status codes (100-599), e.g. [429, 502, 503, 504]."
            )
        given["retry_statuses"] = frozenset(int(str(s)) for s in statuses)
    try:
        return RetryPolicy(**given)
    except (TypeError, ValueError, QuamotionConfigError) as err:
        raise QuamotionConfigError(f"Connection {conn_id!r}: retry is not valid: {err}") from None


def _proxies(value: Any, conn_id: str) -> dict[str, str] | None:
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise QuamotionConfigError(
            f'Connection {conn_id!r}: proxies must be a JSON object such as {{"https": "http://proxy:3128"}}.'
        )
    return {str(k): v for k, v in value.items()}
