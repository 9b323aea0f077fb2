"""The transport's pure rules, shared by the sync and async clients so both follow the same policy.

* **URL resolution** (:func:`resolve_url`): ``"testRun"`` is project-relative and resolves against
  ``{host}{relativeUrl}api/``; ``"/api/version"`` resolves from the host root; an absolute URL is
  allowed for the connection's own origin only.
* **Destination** (:func:`destination_of`, :func:`check_destination`): a URL is read as urllib3 (the
  parser that opens the sync client's socket) and yarl (the async client's) read it, and refused
  when it holds anything two parsers could read differently (a backslash, userinfo,
  percent-encoding or odd characters in the host, whitespace). The clients check again *at the moment of sending*, on the prepared request:
  whatever carries a bearer token, a secret or a body goes only to the session's own origin and only
  over https (plain http for loopback hosts alone).
* **Retries** (:func:`retry_decision`, :func:`wait_seconds`, :class:`Retrier`): 429, 5xx,
  dropped connections and timeouts, exponential backoff with full jitter, ``Retry-After`` honoured and
  capped. A non-idempotent request (POST, PATCH, DELETE) is retried only when it certainly was not
  processed (429, connection refused, connect timeout), so remote work is never duplicated.
* **Errors** (:func:`error_for_status`, :func:`transport_error`): typed exceptions that name method,
  path, status and the start of the body; every message passes the process's redactor
  (:func:`airflow_provider_quamotion.exceptions.redact`), which knows the live secrets and tokens.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

from airflow_provider_quamotion.exceptions import (
    QuamotionApiError,
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionError,
    QuamotionInsecureRequestError,
    QuamotionNotFoundError,
    QuamotionRateLimitedError,
    QuamotionTimeoutError,
    excerpt,
    redact,
)

if TYPE_CHECKING:
    from airflow_provider_quamotion.settings import RetryPolicy

log = logging.getLogger("airflow_provider_quamotion.transport")

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORTS = {"https": 443, "http": 80}
#: Characters no URL of ours may hold anywhere: parsers disagree on them (``\`` is a path separator
#: to WHATWG parsers and urllib3, not to ``urllib.parse``) or they smuggle a second request.
_AMBIGUOUS = re.compile(r"[\\\s\x00-\x1f\x7f]")
#: A host name (RFC 1123 labels, optional trailing dot) or a bracketed IPv6 literal.
_HOST = re.compile(
    r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)
_IPV6 = re.compile(r"\[[0-9a-f:.]+\]")


@functools.lru_cache(maxsize=32768)
def destination_of(url: str) -> tuple[str, str, int]:
    """The ``(scheme, host, port)`` a request to ``url`` connects to.

    The URL is read by ``urllib.parse``, by urllib3 (which opens the sync client's sockets) and by
    yarl (by which ``aiohttp``, the async client, opens its sockets); it is refused unless all three
    read the same destination and its authority is plain: no userinfo (``user@``), no
    percent-encoding, no backslash or whitespace, a host made of DNS labels or a bracketed IPv6
    address, a numeric port in 1-65535.

    A URL read once is not read again (a cache of the last 32,768: a triggerer's triggers poll
    the same URLs every few seconds); a refused one is checked again each time.

    :param url: an absolute http(s) URL.
    :raises QuamotionInsecureRequestError: naming what is wrong.
    """
    text = str(url)
    shown = _Shown(text)
    if _AMBIGUOUS.search(text):
        raise QuamotionInsecureRequestError(
            f"Refused {shown!r}: a URL must not contain a backslash, whitespace or control characters "
            "(parsers read them differently, so the request could reach another host)."
        )
    try:
        parts = urlsplit(text)
    except ValueError as err:
        raise QuamotionInsecureRequestError(f"Refused {shown!r}: not a valid URL ({err}).") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        raise QuamotionInsecureRequestError(f"Refused {shown!r}: not an absolute http(s) URL.")
    authority = parts.netloc
    if not authority.isascii():
        raise QuamotionInsecureRequestError(
            f"Refused {shown!r}: the host part holds non-ASCII characters (parsers normalise them "
            "differently); give the host in its ASCII (punycode) form."
        )
    if "@" in authority or "%" in authority:
        raise QuamotionInsecureRequestError(
            f"Refused {shown!r}: the host part holds userinfo ('@') or percent-encoding; give a plain "
            "host such as https://cloud.quamotion.mobi (credentials belong in the connection's fields)."
        )
    host, _, port_text = authority.rpartition(":") if not authority.endswith("]") else (authority, "", "")
    if not host:
        host, port_text = authority, ""
    host = host.lower()
    if not (_IPV6.fullmatch(host) or (_HOST.fullmatch(host) and ":" not in host)):
        raise QuamotionInsecureRequestError(f"Refused {shown!r}: {host!r} is not a valid host name.")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise QuamotionInsecureRequestError(f"Refused {shown!r}: port {port_text!r} is not in 1-65535.")
        port = int(port_text)
    elif authority.endswith(":"):
        raise QuamotionInsecureRequestError(f"Refused {shown!r}: an empty port.")
    else:
        port = _DEFAULT_PORTS[scheme]
    bare = host.strip("[]")
    for reader, (their_scheme, their_host, their_port) in _other_readings(text):
        if (their_scheme, their_host, their_port or _DEFAULT_PORTS[scheme]) != (scheme, bare, port):
            raise QuamotionInsecureRequestError(
                f"Refused {shown!r}: {reader} reads its destination differently "
                f"({their_scheme}://{their_host}:{their_port}); give a plain https://host[:port] URL."
            )
    return scheme, bare, port


class _Shown:
    """A URL as an error message shows it (redacted, cut), computed only when a message is made."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return repr(redact(self.text)[:200])

    def __str__(self) -> str:
        return redact(self.text)[:200]


def _other_readings(url: str) -> list[tuple[str, tuple[str, str, int | None]]]:
    """How urllib3 and yarl read ``url``'s destination (what the clients' sockets would connect to)."""
    from urllib3.util import parse_url

    readings: list[tuple[str, tuple[str, str, int | None]]] = []
    try:
        u3 = parse_url(url)
        readings.append(
            ("urllib3", ((u3.scheme or "").lower(), (u3.host or "").lower().strip("[]"), u3.port))
        )
    except Exception:
        readings.append(("urllib3", ("", "", None)))
    try:
        readings.append(("yarl", connects_to(url)))
    except Exception:
        readings.append(("yarl", ("", "", None)))
    return readings


@functools.lru_cache(maxsize=32768)
def connects_to(url: str) -> tuple[str, str, int]:
    """The ``(scheme, host, port)`` ``aiohttp`` opens its socket to for ``url`` (read with ``yarl``,
    the parser ``aiohttp`` itself uses; the last 32,768 readings are remembered)."""
    from yarl import URL

    parsed = URL(url)
    scheme = (parsed.scheme or "").lower()
    host = (parsed.raw_host or "").lower().strip("[]")
    return scheme, host, parsed.port or _DEFAULT_PORTS.get(scheme, 0)


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lower-cased, default ports dropped (not validated)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or _DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def is_loopback(url: str) -> bool:
    """Whether ``url`` points at this machine (plain http is allowed there only)."""
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def check_destination(url: str, origin: str) -> None:
    """Refuse ``url`` unless it connects to ``origin`` over https (or http on a loopback host).

    :param url: where a request is about to go.
    :param origin: the only origin allowed (``scheme://host[:port]``).
    :raises QuamotionInsecureRequestError: with what was refused and why.
    """
    check_connects_to(destination_of(url), origin)


@functools.lru_cache(maxsize=256)
def _origin_destination(origin: str) -> tuple[str, str, int]:
    """:func:`destination_of` a session's origin, read once (it is checked on every request)."""
    return destination_of(origin)


def check_connects_to(destination: tuple[str, str, int], origin: str) -> None:
    """Refuse a ``(scheme, host, port)`` destination that is not ``origin``, or plain http off loopback."""
    scheme, host, port = destination
    allowed = _origin_destination(origin)
    shown = f"{scheme}://{host}:{port}"
    if (scheme, host, port) != allowed:
        raise QuamotionInsecureRequestError(
            f"Refused a request to {shown!r}: the bearer token goes only to the connection's own origin "
            f"{origin!r} (and so do secrets and request bodies). Use a path such as '/api/version' or "
            "'testRun' instead of another host."
        )
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise QuamotionInsecureRequestError(
            f"Refused plain http to {origin!r}: the bearer token travels only over https."
        )


IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "TRACE"})
DEFAULT_POOL_SIZE = 32
#: Connections an async client (shared by the triggers of one connection in a triggerer) may hold.
ASYNC_POOL_SIZE = 100


class TokenProvider(Protocol):
    """What the transport needs from auth: a current bearer token, and a way to drop a rejected one."""

    def get_token(self) -> str:
        """A valid bearer token (may block on the network)."""
        ...

    async def aget_token(self) -> str:
        """A valid bearer token without blocking the event loop."""
        ...

    def invalidate(self, token: str) -> None:
        """Forget ``token`` (the API answered 401 to it)."""
        ...


def needs_api_root(endpoint: str) -> bool:
    """Whether ``endpoint`` is project-relative (``"testRun"``): resolving it needs the project's API root.

    :param endpoint: an endpoint as :func:`resolve_url` takes it.
    """
    return _endpoint_kind(str(endpoint).strip()) == "project"


@functools.lru_cache(maxsize=32768)
def _endpoint_kind(endpoint: str) -> str:
    if not endpoint:
        raise QuamotionConfigError("An endpoint is required, e.g. 'testRun' or '/api/version'.")
    try:
        parts = urlsplit(endpoint)
    except ValueError as err:
        raise QuamotionInsecureRequestError(f"Refused endpoint {redact(endpoint)[:200]!r}: {err}.") from None
    if parts.scheme or endpoint.startswith("//"):
        return "absolute"
    return "host" if endpoint.startswith("/") else "project"


def resolve_url(base_url: str, endpoint: str, api_root: Callable[[], str]) -> str:
    """Resolve ``endpoint`` like a URL reference.

    A resolution is pure (strings in, a checked URL out), so the last 32,768 are remembered: a
    triggerer's triggers resolve the same few URLs every few seconds. A refused one is not
    remembered (it raises each time).

    :param base_url: the connection's base URL.
    :param endpoint: ``"testRun"`` (project-relative), ``"/api/version"`` (host root) or an absolute URL.
    :param api_root: returns the project's API root path (e.g. ``/project/acme/api/``); called only
        for a project-relative endpoint, so the project is looked up only when needed.
    """
    endpoint = str(endpoint).strip()
    root = api_root() if _endpoint_kind(endpoint) == "project" else ""
    return _resolved(base_url, endpoint, root)


@functools.lru_cache(maxsize=32768)
def _resolved(base_url: str, endpoint: str, root: str) -> str:
    kind = _endpoint_kind(endpoint)
    if kind == "absolute":
        url = endpoint
    elif kind == "host":
        url = urljoin(base_url + "/", endpoint)
    else:
        url = urljoin(base_url + root, endpoint)
    check_destination(url, origin_of(base_url))
    return url


@functools.lru_cache(maxsize=32768)
def request_label(method: str, url: str) -> str:
    """``"GET /path"``: how logs and errors name a request (never its query, which may carry values).

    :param method: the request's method.
    :param url: the request's URL.
    """
    return f"{method.upper()} {urlsplit(url).path}"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delta-seconds or an HTTP date. ``None`` when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


#: Exceptions (anywhere in a failure's cause chain) of a connection the server closed without a reply.
_DROPPED = (
    "RemoteDisconnected",
    "RemoteProtocolError",
    "ServerDisconnectedError",
    "ConnectionResetError",
    "BrokenPipeError",
)


def dropped_retry_after(exc: BaseException) -> float | None:
    """``0.0`` when ``exc`` is a connection closed without a reply, else ``None`` (no ``Retry-After``).

    Such a failure is retried like ``Retry-After: 0``, after the policy's small growing floor rather
    than the full backoff: it is most often a kept-alive connection the server (or a proxy) had
    closed, and the next attempt opens a fresh one. Timeouts, refused connections and 5xx without
    ``Retry-After`` keep the exponential backoff: there the server may be struggling.

    :param exc: the transport failure.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if type(cause).__name__ in _DROPPED or "without response" in str(cause):
            return 0.0
        cause = cause.__cause__ or cause.__context__
    return None


#: The pause before a retry the server allows at once (``Retry-After: 0``, a dropped connection)
#: doubles from ``min_wait`` up to this many times ``min_wait`` (0.1, 0.2, 0.4, 0.4 ... s by default).
FLOOR_GROWTH = 4


def wait_seconds(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    """How long to wait before attempt ``attempt + 1``: ``Retry-After`` if given, else full jitter."""
    if retry_after is not None:
        # a server that says "now" (Retry-After: 0) still gets a small pause, growing to
        # FLOOR_GROWTH x min_wait: a burst of faults must not spend every attempt within a few
        # milliseconds, nor one unlucky request (4 faults in a row) wait seconds the server never asked for
        growth = min(FLOOR_GROWTH, 2 ** max(0, attempt - 1))
        floor = min(policy.backoff_max, policy.min_wait * growth)
        return max(min(retry_after, policy.retry_after_max), floor)
    ceiling = min(policy.backoff_max, policy.backoff_initial * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)


def retry_decision(policy: RetryPolicy, method: str, *, status: int | None = None, sent: bool = True) -> bool:
    """Whether a failed attempt may be retried.

    :param status: the HTTP status, or ``None`` for a transport failure.
    :param sent: for a transport failure, whether the request may have reached the server.
    """
    idempotent = method.upper() in IDEMPOTENT_METHODS
    if status is None:
        return idempotent or not sent
    if status not in policy.retry_statuses:
        return False
    return idempotent or status == 429


def error_for_status(
    method: str, url: str, status: int, body: str | bytes | None, headers: Mapping[str, str] | None = None
) -> QuamotionApiError | QuamotionAuthError:
    """The typed error for a non-2xx reply."""
    path = urlsplit(url).path
    where = f"{method.upper()} {path}"
    text = excerpt(body)
    detail = f": {text}" if text else ""
    if status in (401, 403):
        challenge = excerpt((headers or {}).get("WWW-Authenticate"))
        hint = f" ({challenge})" if challenge else ""
        return QuamotionAuthError(
            f"{where} was refused with HTTP {status}{hint}{detail}. Check the connection's credentials, "
            "tenant_id and resource (it must end with '/', e.g. https://cloud.quamotion.mobi/)."
        )
    if status == 404:
        return QuamotionNotFoundError(
            f"{where} returned HTTP 404 Not Found{detail}", status=status, method=method, url=url
        )
    if status == 429:
        return QuamotionRateLimitedError(
            f"{where} is still rate limited (HTTP 429) after every retry{detail}",
            status=status,
            method=method,
            url=url,
        )
    return QuamotionApiError(
        f"{where} failed with HTTP {status}{detail}", status=status, method=method, url=url
    )


def transport_error(
    method: str, url: str, exc: BaseException, time_left: float | None = None
) -> QuamotionApiError | QuamotionTimeoutError:
    """The typed error for a connection failure or timeout, after every retry.

    :param method: the request's method.
    :param url: the request's URL.
    :param exc: the client library's failure.
    :param time_left: seconds left before the caller's deadline when it failed (``None`` without
        one): a timeout at the deadline is the deadline cutting the attempt short (its timeout was
        the time left), a :class:`QuamotionTimeoutError`, not a server too slow for ``timeout``, so
        a wait keeps reporting the failure that made it poll again (:func:`runs.poll_failure`).
    """
    name = type(exc).__name__
    where = f"{method.upper()} {origin_of(url)}{urlsplit(url).path}"
    if "SSL" in name or "Certificate" in name or "CERTIFICATE" in str(exc):
        advice = (
            "TLS certificate verification failed. Set 'verify' in the connection's extra to the CA bundle "
            "that signed the server's certificate (or true for the system CAs)."
        )
    elif "Timeout" in name:
        if time_left is not None and time_left <= DEADLINE_SLACK_SECONDS:
            return QuamotionTimeoutError(
                f"{where}: the caller's deadline passed while waiting for the reply ({name})."
            )
        advice = "The server did not answer in time. Raise 'timeout' in the connection, or check proxies."
    else:
        advice = "Could not connect. Check the host, proxies and TLS settings (verify) of the connection."
    return QuamotionApiError(f"{where} failed ({name}). {advice}", method=method, url=url)


#: A timeout this close to the caller's deadline (or past it) is the deadline's (timers fire a little
#: early or late against the wall clock the deadline is read on).
DEADLINE_SLACK_SECONDS = 0.05


@dataclass
class RetryableFailure(Exception):
    """Raised inside an attempt to ask the :class:`Retrier` for another one."""

    error: QuamotionError
    retry_after: float | None = None
    response: Any = None

    @property
    def reason(self) -> str:
        """A short description of the failed attempt for the retry log (``HTTP 503``, ``ReadTimeout``)."""
        status = getattr(self.error, "status", None)
        if status:
            return f"HTTP {status}"
        cause = self.__cause__
        return type(cause).__name__ if cause is not None else type(self.error).__name__


def time_left_until(deadline: float | None) -> Callable[[], float | None]:
    """Seconds left before ``deadline`` (epoch seconds), ``None`` without one."""
    return lambda: None if deadline is None else deadline - time.time()


def attempt_timeout(timeout: Any, time_left: float | None, where: str) -> Any:
    """One attempt's timeout: the configured one, cut to the time left before the caller's deadline."""
    if time_left is None:
        return timeout
    if time_left <= 0:
        raise QuamotionTimeoutError(f"{where}: the caller's deadline passed before the request was sent.")
    if timeout is None:
        return time_left
    if isinstance(timeout, int | float):
        return min(float(timeout), time_left)
    return timeout  # a structured timeout given by the caller is used as given


T = TypeVar("T")


class Retrier:
    """The retry loop of one :class:`RetryPolicy`, for both clients: built once per policy, shared.

    It keeps no per-call state (tenacity's ``Retrying`` keeps its statistics in thread-local storage,
    which coroutines of one thread would share): each :meth:`call` / :meth:`acall` holds its own
    attempt count and start time. An attempt asks for another one by raising
    :class:`RetryableFailure`; :meth:`next_wait` decides (attempts, the retry budget in seconds,
    the caller's deadline) and the last failure is raised when it says stop.

    :param policy: the retry policy.
    """

    __slots__ = ("policy",)

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def next_wait(
        self,
        method: str,
        url: str,
        attempt: int,
        failure: RetryableFailure,
        elapsed: float,
        left: float | None,
    ) -> float | None:
        """The seconds to wait before attempt ``attempt + 1``, or ``None`` when no retry may start.

        :param method: the request's method (for the log).
        :param url: the request's URL (its path is logged).
        :param attempt: the attempt that just failed, from 1.
        :param failure: how it failed (its ``Retry-After``, if any).
        :param elapsed: seconds since the first attempt started.
        :param left: seconds left before the caller's deadline, ``None`` without one.
        """
        policy = self.policy
        if attempt >= policy.max_attempts:
            return None
        wanted = wait_seconds(policy, attempt, failure.retry_after)
        where = request_label(method, url)
        if elapsed + wanted > policy.retry_budget:
            log.info(
                "%s: not retried, the next attempt would pass the retry budget of %.0f s",
                where,
                policy.retry_budget,
            )
            return None
        if left is not None and wanted >= left:
            log.info(
                "%s: not retried, the next attempt (in %.1f s) would pass the deadline (%.1f s left)",
                where,
                wanted,
                max(0.0, left),
            )
            return None
        log.warning(
            "%s: attempt %d of %d failed (%s); retrying in %.1f s",
            where,
            attempt,
            policy.max_attempts,
            failure.reason,
            wanted,
        )
        return wanted

    def call(
        self,
        method: str,
        url: str,
        attempt: Callable[[], T],
        time_left: Callable[[], float | None] = lambda: None,
    ) -> T:
        """Run ``attempt`` until it returns, or raise its last :class:`RetryableFailure`.

        :param method: the request's method.
        :param url: the request's URL.
        :param attempt: one attempt; raises :class:`RetryableFailure` to ask for another.
        :param time_left: seconds left before the caller's deadline (``None`` without one).
        """
        started = time.monotonic()
        number = 1
        while True:
            try:
                return attempt()
            except RetryableFailure as failure:
                wait = self.next_wait(method, url, number, failure, time.monotonic() - started, time_left())
                if wait is None:
                    raise
            time.sleep(wait)
            number += 1

    async def acall(
        self,
        method: str,
        url: str,
        attempt: Callable[[], Awaitable[T]],
        time_left: Callable[[], float | None] = lambda: None,
    ) -> T:
        """:meth:`call` for a coroutine: waits with ``asyncio.sleep``, never blocking the loop.

        :param method: the request's method.
        :param url: the request's URL.
        :param attempt: makes one attempt's coroutine; raises :class:`RetryableFailure` to ask for another.
        :param time_left: seconds left before the caller's deadline (``None`` without one).
        """
        started = time.monotonic()
        number = 1
        while True:
            try:
                return await attempt()
            except RetryableFailure as failure:
                wait = self.next_wait(method, url, number, failure, time.monotonic() - started, time_left())
                if wait is None:
                    raise
            await asyncio.sleep(wait)
            number += 1


@functools.lru_cache(maxsize=64)
def retrier(policy: RetryPolicy) -> Retrier:
    """The :class:`Retrier` of ``policy`` (a frozen, hashable dataclass), built once per process."""
    return Retrier(policy)


def with_bearer(headers: Mapping[str, str] | None, token: str) -> dict[str, str]:
    merged = dict(headers or {})
    merged["Authorization"] = f"Bearer {token}"
    return merged


def is_certificate_failure(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a TLS certificate verification failure: not transient."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        text = str(exc).upper()
        if "CERTIFICATE_VERIFY_FAILED" in text or "CERTIFICATE VERIFY FAILED" in text:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


#: SSL contexts by ``verify`` setting (and, for a CA path, its size and modification time): loading
