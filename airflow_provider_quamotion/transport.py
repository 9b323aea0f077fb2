"""The transport: one request policy for the sync (``requests``) and async (``httpx``) clients.

The policy is a set of pure functions used by both clients, so both follow the same rules:

* **URL resolution** (:func:`resolve_url`): ``"testRun"`` is project-relative and resolves against
  ``{host}{relativeUrl}api/``; ``"/api/version"`` resolves from the host root; an absolute URL is
  allowed for the connection's own origin only.
* **Origin and https guard** (:func:`check_destination`): the bearer token goes only to the
  connection's origin and only over https (plain http for loopback hosts alone). Anything else is
  refused before a request is sent; redirects to another origin lose the ``Authorization`` header.
* **Retries** (:func:`retry_decision`, :func:`wait_seconds`), run by ``tenacity``: 429, 5xx, dropped
  connections and timeouts, exponential backoff with full jitter, ``Retry-After`` honoured and
  capped. A non-idempotent request (POST, PATCH, DELETE) is retried only when it certainly was not
  processed (429, connection refused, connect timeout), so remote work is never duplicated.
  A 401 drops the token, gets a new one and resends once.
* **TLS, proxies, timeouts** from the connection govern every call; the environment
  (``REQUESTS_CA_BUNDLE``, ``HTTPS_PROXY``) does not (``trust_env=False``).
* **Errors** (:func:`error_for_status`): typed exceptions that name method, path, status and the
  start of the body, never a token or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import random
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urljoin, urlsplit

import requests
import tenacity
from requests.adapters import HTTPAdapter

from airflow_provider_quamotion import api
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
from airflow_provider_quamotion.settings import QuamotionSettings, RetryPolicy, is_loopback, origin_of

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

#: Methods retried after a 5xx, a dropped connection or a read timeout. DELETE is left out on purpose:
#: deleting a schedule twice (or deleting what another client re-created meanwhile) is remote work the
#: caller did not ask for, so DELETE, like POST and PATCH, is retried only when it was never processed.
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


# --- the policy: pure functions -------------------------------------------------------------------


def resolve_url(base_url: str, endpoint: str, api_root: Callable[[], str]) -> str:
    """Resolve ``endpoint`` like a URL reference.

    :param base_url: the connection's base URL.
    :param endpoint: ``"testRun"`` (project-relative), ``"/api/version"`` (host root) or an absolute URL.
    :param api_root: returns the project's API root path (e.g. ``/project/acme/api/``); called only
        for a project-relative endpoint, so the project is looked up only when needed.
    """
    endpoint = str(endpoint).strip()
    if not endpoint:
        raise QuamotionConfigError("An endpoint is required, e.g. 'testRun' or '/api/version'.")
    parts = urlsplit(endpoint)
    if parts.scheme or endpoint.startswith("//"):
        url = endpoint
    elif endpoint.startswith("/"):
        url = urljoin(base_url + "/", endpoint)
    else:
        url = urljoin(base_url + api_root(), endpoint)
    check_destination(url, origin_of(base_url))
    return url


def check_destination(url: str, origin: str) -> None:
    """Refuse ``url`` unless it is on ``origin`` and uses https (or http on a loopback host)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QuamotionInsecureRequestError(f"Refused {redact(url)!r}: not an http(s) URL.")
    if origin_of(url) != origin:
        raise QuamotionInsecureRequestError(
            f"Refused a request to {origin_of(url)!r}: the bearer token goes only to the connection's own "
            f"origin {origin!r}. Use a path such as '/api/version' or 'testRun' instead of another host."
        )
    if parts.scheme == "http" and not is_loopback(url):
        raise QuamotionInsecureRequestError(
            f"Refused plain http to {origin!r}: the bearer token travels only over https."
        )


def project_api_root(projects: Any, wanted: str | None) -> str:
    """Pick the project's API root path (``{relativeUrl}api/``) from the ``/api/project`` reply."""
    records = api.unwrap_list(projects)
    names = [str(p.get(api.PROJECT_NAME)) for p in records if isinstance(p, Mapping)]
    if wanted is None:
        if len(records) != 1:
            listed = ", ".join(names) or "none"
            raise QuamotionConfigError(
                f"This account sees {len(records)} Quamotion projects ({listed}); set 'project' in the "
                "connection's extra to one of them."
            )
        chosen = records[0]
    else:
        matches = [p for p in records if isinstance(p, Mapping) and p.get(api.PROJECT_NAME) == wanted]
        if not matches:
            raise QuamotionNotFoundError(
                f"Project {wanted!r} is not visible to this account. Visible projects: "
                f"{', '.join(names) or 'none'}. Fix 'project' in the connection's extra.",
                status=404,
            )
        chosen = matches[0]
    relative = str(chosen.get(api.PROJECT_RELATIVE_URL) or f"/project/{chosen.get(api.PROJECT_NAME)}/")
    if not relative.startswith("/"):
        relative = "/" + relative
    if not relative.endswith("/"):
        relative += "/"
    return relative + "api/"


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


def wait_seconds(policy: RetryPolicy, attempt: int, retry_after: float | None) -> float:
    """How long to wait before attempt ``attempt + 1``: ``Retry-After`` if given, else full jitter."""
    if retry_after is not None:
        return min(retry_after, policy.retry_after_max)
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


def transport_error(method: str, url: str, exc: BaseException) -> QuamotionApiError:
    """The typed error for a connection failure or timeout, after every retry."""
    name = type(exc).__name__
    where = f"{method.upper()} {origin_of(url)}{urlsplit(url).path}"
    if "SSL" in name or "Certificate" in name or "CERTIFICATE" in str(exc):
        advice = (
            "TLS certificate verification failed. Set 'verify' in the connection's extra to the CA bundle "
            "that signed the server's certificate (or true for the system CAs)."
        )
    elif "Timeout" in name:
        advice = "The server did not answer in time. Raise 'timeout' in the connection, or check proxies."
    else:
        advice = "Could not connect. Check the host, proxies and TLS settings (verify) of the connection."
    return QuamotionApiError(f"{where} failed ({name}). {advice}", method=method, url=url)


@dataclass
class _Retry(Exception):
    """Raised inside an attempt to ask tenacity for another one."""

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


def _retrying(
    policy: RetryPolicy,
    method: str,
    url: str,
    factory: Any,
    time_left: Callable[[], float | None] = lambda: None,
) -> Any:
    """tenacity's loop for one request: the policy's waits and attempts, bounded by a deadline.

    No retry starts whose wait would pass the deadline, and waits are cut to the time left; the
    last attempt's error is then raised as when the attempts run out.
    """
    wanted = [0.0]  # the last wait asked for, before it was cut to the time left

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        wanted[0] = wait_seconds(
            policy, state.attempt_number, exc.retry_after if isinstance(exc, _Retry) else None
        )
        left = time_left()
        return wanted[0] if left is None else max(0.0, min(wanted[0], left))

    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.max_attempts:
            return True
        left = time_left()
        if left is not None and wanted[0] >= left:
            log.info(
                "%s %s: not retried, the next attempt (in %.1f s) would pass the deadline (%.1f s left)",
                method.upper(),
                urlsplit(url).path,
                wanted[0],
                max(0.0, left),
            )
            return True
        return False

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s %s: attempt %d of %d failed (%s); retrying in %.1f s",
            method.upper(),
            urlsplit(url).path,
            state.attempt_number,
            policy.max_attempts,
            exc.reason if isinstance(exc, _Retry) else type(exc).__name__,
            state.upcoming_sleep,
        )

    return factory(
        retry=tenacity.retry_if_exception_type(_Retry),
        wait=wait,
        stop=stop,
        before_sleep=before_sleep,
        reraise=True,
    )


# --- the sync client ------------------------------------------------------------------------------


def _requests_failure_sent(exc: requests.RequestException) -> bool:
    """Whether a ``requests`` failure may have happened after the request reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ConnectionError):
        reason = getattr(exc.args[0], "reason", None) if exc.args else None
        return not (
            type(reason).__name__ == "NewConnectionError" or isinstance(reason, ConnectionRefusedError)
        )
    return True


class QuamotionSession(requests.Session):
    """A ``requests.Session`` that follows the transport policy on every call.

    Endpoints resolve against the connection (``session.get("testRun")``); the bearer token is attached
    and renewed on 401; retries, TLS, proxies and timeouts come from the settings. Non-2xx replies raise
    typed errors unless ``raise_for_status=False`` (used for Azure AD's token endpoint, whose error
    bodies msal reads itself).

    :param settings: the connection's settings.
    :param token_provider: where bearer tokens come from; ``None`` sends no ``Authorization`` header.
    :param origin: the only origin this session talks to (default: the API's).
    :param raise_for_status: raise typed errors for non-2xx replies.
    :param pool_size: connections kept per host (raise it for concurrent fan-out).
    :param safe_to_repeat: every request of this session may be repeated whatever its method (token
        requests: a POST that has no side effect), so retries follow the idempotent rules.
    """

    def __init__(
        self,
        settings: QuamotionSettings,
        token_provider: TokenProvider | None = None,
        *,
        origin: str | None = None,
        raise_for_status: bool = True,
        pool_size: int = DEFAULT_POOL_SIZE,
        safe_to_repeat: bool = False,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.token_provider = token_provider
        self.allowed_origin = origin or settings.origin
        self.raise_for_status_enabled = raise_for_status
        self.safe_to_repeat = safe_to_repeat
        self.trust_env = False
        self.verify = settings.verify
        self.proxies = dict(settings.proxies or {})
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._api_root: str | None = None
        self._api_root_lock = threading.Lock()

    # URL resolution --------------------------------------------------------------------------------

    def api_root(self) -> str:
        """The project's API root path, looked up once (``GET /api/project``) and cached."""
        if self._api_root is None:
            with self._api_root_lock:
                if self._api_root is None:
                    key = _project_key(self.settings)
                    root = _PROJECT_ROOTS.get(key)
                    if root is None:
                        root = project_api_root(self.get(api.PROJECTS).json(), self.settings.project)
                        _PROJECT_ROOTS[key] = root
                    self._api_root = root
        return self._api_root

    def url_for(self, endpoint: str) -> str:
        """The absolute URL of ``endpoint`` (see :func:`resolve_url`)."""
        base = self.allowed_origin if self.allowed_origin != self.settings.origin else self.settings.base_url
        return resolve_url(base, endpoint, self.api_root)

    # requests overrides ----------------------------------------------------------------------------

    def request(  # type: ignore[override]
        self, method: str, url: str | bytes, **kwargs: Any
    ) -> requests.Response:
        """Send a request under the transport policy (see the class docstring).

        Besides ``requests``' own arguments, ``deadline`` (epoch seconds) bounds the whole call: no
        retry starts whose wait would pass it, and each attempt's timeout is cut to the time left.
        """
        method = method.upper()
        retry_as = "GET" if self.safe_to_repeat else method
        full_url = self.url_for(url.decode() if isinstance(url, bytes) else url)
        time_left = time_left_until(kwargs.pop("deadline", None))
        timeout = kwargs.pop("timeout", self.settings.timeout)
        where = f"{method} {urlsplit(full_url).path}"
        rewind = _rewinder(kwargs.get("files"), kwargs.get("data"))

        def attempt() -> requests.Response:
            rewind()
            kwargs["timeout"] = attempt_timeout(timeout, time_left(), where)
            response = self._send_with_renewal(method, full_url, kwargs)
            status = response.status_code
            if status >= 400 and retry_decision(self.settings.retry, retry_as, status=status):
                error = error_for_status(method, full_url, status, _peek_body(response), response.headers)
                after = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                raise _Retry(error, after, response)
            return response

        def guarded() -> requests.Response:
            try:
                return attempt()
            except requests.RequestException as exc:
                error = transport_error(method, full_url, exc)
                if isinstance(exc, requests.exceptions.SSLError):
                    raise error from exc  # a certificate problem does not go away by retrying
                if retry_decision(self.settings.retry, retry_as, sent=_requests_failure_sent(exc)):
                    raise _Retry(error) from exc
                raise error from exc

        try:
            response: requests.Response = _retrying(
                self.settings.retry, method, full_url, tenacity.Retrying, time_left
            )(guarded)
        except _Retry as exhausted:
            if not self.raise_for_status_enabled and exhausted.response is not None:
                return exhausted.response
            raise exhausted.error from None
        if self.raise_for_status_enabled and response.status_code >= 400:
            error = error_for_status(
                method, full_url, response.status_code, _peek_body(response), response.headers
            )
            response.close()
            raise error
        return response

    def _send_with_renewal(self, method: str, url: str, kwargs: dict[str, Any]) -> requests.Response:
        if self.token_provider is None:
            return super().request(method, url, **kwargs)
        rest: dict[str, Any] = {k: v for k, v in kwargs.items() if k != "headers"}
        token = self.token_provider.get_token()
        response = super().request(method, url, headers=_with_bearer(kwargs.get("headers"), token), **rest)
        if response.status_code == 401:
            log.info("%s %s: HTTP 401, renewing the token and trying once more", method, urlsplit(url).path)
            response.close()
            self.token_provider.invalidate(token)
            _rewinder(kwargs.get("files"), kwargs.get("data"))()
            token = self.token_provider.get_token()
            response = super().request(
                method, url, headers=_with_bearer(kwargs.get("headers"), token), **rest
            )
        return response

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """On a redirect, keep ``Authorization`` only when the target is still this session's origin."""
        url = prepared_request.url or ""
        try:
            check_destination(url, self.allowed_origin)
        except QuamotionInsecureRequestError:
            prepared_request.headers.pop("Authorization", None)
            log.warning("Redirect to %s: the bearer token was not forwarded", origin_of(url))


def _with_bearer(headers: Mapping[str, str] | None, token: str) -> dict[str, str]:
    merged = dict(headers or {})
    merged["Authorization"] = f"Bearer {token}"
    return merged


def _peek_body(response: requests.Response) -> bytes:
    """The start of a body, without reading a huge streamed one."""
    if response.raw is not None and not response._content_consumed:  # type: ignore[attr-defined]
        try:
            return response.raw.read(4096, decode_content=True) or b""
        except Exception:
            return b""
    return response.content[:4096] if response.content else b""


def _rewinder(*payloads: Any) -> Callable[[], None]:
    """A function that seeks every seekable file in ``files``/``data`` back to where it started."""
    streams: list[tuple[Any, int]] = []

    def collect(value: Any) -> None:
        if hasattr(value, "seek") and hasattr(value, "tell"):
            with contextlib.suppress(OSError, ValueError):
                streams.append((value, value.tell()))
        elif isinstance(value, Mapping):
            for item in value.values():
                collect(item)
        elif isinstance(value, list | tuple):
            for item in value:
                collect(item)

    for payload in payloads:
        collect(payload)

    def rewind() -> None:
        for stream, position in streams:
            stream.seek(position)

    return rewind


_PROJECT_ROOTS: dict[tuple[str, ...], str] = {}


def _project_key(settings: QuamotionSettings) -> tuple[str, ...]:
    return (settings.origin, settings.client_id or "", settings.tenant_id, str(settings.project))


def iter_json_records(response: requests.Response, record_path: str | None = None) -> Iterator[Any]:
    """Stream the records of a JSON array reply without holding the body in memory.

    The array may be the whole reply or wrapped (``{"value": [...]}``); ``record_path`` (dotted, as
    ``ijson`` prefixes: ``"data.items"``) names another place.
    """
    import ijson

    raw = response.raw
    raw.decode_content = True
    head = b""
    while not head.strip():
        chunk = raw.read(1)
        if not chunk:
            return
        head += chunk
    prefix = (
        f"{record_path}.item" if record_path else ("item" if head.strip().startswith(b"[") else "value.item")
    )

    class _Chained:
        def __init__(self) -> None:
            self.pending = head

        def read(self, size: int = -1) -> bytes:
            if size == 0:  # ijson probes the stream's type with read(0)
                return b""
            if self.pending:
                out, self.pending = self.pending, b""
                return out
            return raw.read(size if size and size > 0 else 65536) or b""

    try:
        yield from ijson.items(_Chained(), prefix, use_float=True)
    except ijson.JSONError as err:
        raise error_for_non_json(response, f"the JSON array could not be parsed ({err})") from None
    finally:
        response.close()


def error_for_non_json(response: Any, why: str = "the reply is not JSON") -> QuamotionError:
    """The typed error for a reply that should have been JSON."""
    from airflow_provider_quamotion.exceptions import QuamotionResponseError

    method = getattr(getattr(response, "request", None), "method", "") or ""
    url = str(getattr(response, "url", ""))
    ctype = response.headers.get("Content-Type", "unknown")
    body = getattr(response, "_content", None)
    text = excerpt(body if isinstance(body, bytes | str) else None)
    return QuamotionResponseError(
        f"{method} {urlsplit(url).path}: {why} (Content-Type {ctype}){': ' + text if text else ''}. "
        "Check the endpoint: an HTML page usually means a wrong host or path.",
        status=getattr(response, "status_code", None),
        method=method,
        url=url,
    )


def parse_json(response: Any) -> Any:
    """The JSON body of a reply, or a :class:`QuamotionResponseError` that says what came instead."""
    try:
        return response.json()
    except ValueError:
        raise error_for_non_json(response) from None


# --- the async client -----------------------------------------------------------------------------


def _httpx_failure_sent(exc: Exception) -> bool:
    import httpx

    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


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
#: a CA bundle costs milliseconds of CPU, which 1,000 triggers must not each spend in the event loop.
_SSL_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}
_SSL_CONTEXTS_LOCK = threading.Lock()


def ssl_context(verify: bool | str) -> ssl.SSLContext | bool:
    """The ``httpx`` form of a ``verify`` setting: an ``SSLContext``, built once per setting per process.

    ``True`` is the system CAs (certifi), ``False`` no verification, a path a CA bundle (or a directory
    of CAs). A changed bundle (size or modification time) is loaded again. The environment
    (``SSL_CERT_FILE``) plays no part.
    """
    if isinstance(verify, str):
        try:
            stat = os.stat(verify)
        except OSError:
            return ssl.create_default_context(cafile=verify)  # raises the clear "no such file" error
        key: tuple[Any, ...] = ("path", verify, stat.st_size, stat.st_mtime_ns)
    else:
        key = ("flag", bool(verify))
    with _SSL_CONTEXTS_LOCK:
        context = _SSL_CONTEXTS.get(key)
        if context is None:
            if isinstance(verify, str):
                is_dir = os.path.isdir(verify)
                context = ssl.create_default_context(
                    cafile=None if is_dir else verify, capath=verify if is_dir else None
                )
            else:
                import httpx

                context = httpx.create_ssl_context(verify=bool(verify), trust_env=False)
            for stale in [k for k in _SSL_CONTEXTS if k[:2] == key[:2]]:
                del _SSL_CONTEXTS[stale]
            _SSL_CONTEXTS[key] = context
        return context


@dataclass
class _Pool:
    """One ``httpx.AsyncClient`` of an event loop, and how many :class:`AsyncQuamotionClient` use it."""

    client: httpx.AsyncClient
    users: int = 0


#: Per event loop: one pooled ``httpx.AsyncClient`` per origin, TLS and proxy settings.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Pool]] = (
    weakref.WeakKeyDictionary()
)
#: Per event loop: the project lookup in flight for a ``_PROJECT_ROOTS`` key (one request, others wait).
_PROJECT_LOOKUPS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, ...], asyncio.Task[str]]
] = weakref.WeakKeyDictionary()


def _pool_key(settings: QuamotionSettings) -> tuple[str, ...]:
    proxies = tuple(sorted((settings.proxies or {}).items()))
    return (settings.origin, repr(settings.verify), repr(proxies))


class AsyncQuamotionClient:
    """The async twin of :class:`QuamotionSession`, on ``httpx``, for triggers.

    Same URL resolution, guard, retry decisions, waits, 401 renewal and errors; tokens come from the
    same process-wide cache without blocking the event loop.

    Every client of an event loop with the same origin, TLS and proxy settings shares one pooled
    ``httpx.AsyncClient`` (at most :data:`ASYNC_POOL_SIZE` connections, one ``SSLContext``), closed
    when its last user closes; the project is looked up once per process, with one request in flight
    whatever the number of callers.

    :param settings: the connection's settings.
    :param token_provider: where bearer tokens come from.
    """

    def __init__(self, settings: QuamotionSettings, token_provider: TokenProvider) -> None:
        self.settings = settings
        self.token_provider = token_provider
        self._client: httpx.AsyncClient | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._api_root: str | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            loop = asyncio.get_running_loop()
            pools = _POOLS.setdefault(loop, {})
            key = _pool_key(self.settings)
            pool = pools.get(key)
            if pool is None or pool.client.is_closed:
                pool = _Pool(self._new_http())
                pools[key] = pool
            pool.users += 1
            self._client, self._pool_loop = pool.client, loop
        return self._client

    def _new_http(self) -> httpx.AsyncClient:
        import httpx

        context = ssl_context(self.settings.verify)
        mounts = {
            f"{scheme}://": httpx.AsyncHTTPTransport(proxy=url, verify=context)
            for scheme, url in (self.settings.proxies or {}).items()
        }
        return httpx.AsyncClient(
            verify=context,
            timeout=self.settings.timeout,
            trust_env=False,
            follow_redirects=False,
            mounts=mounts or None,
            # keep every pooled connection alive: triggers sharing one client poll in bursts, and
            # httpx's default (20 kept of 100) would redo TLS handshakes on each burst
            limits=httpx.Limits(max_connections=ASYNC_POOL_SIZE, max_keepalive_connections=ASYNC_POOL_SIZE),
        )

    async def aclose(self) -> None:
        """Stop using the shared pool; the last user closes its connections."""
        client, loop = self._client, self._pool_loop
        self._client = self._pool_loop = None
        if client is None:
            return
        pools = _POOLS.get(loop) if loop is not None else None
        key = _pool_key(self.settings)
        pool = pools.get(key) if pools is not None else None
        if pool is None or pool.client is not client:
            await client.aclose()  # a pool replaced meanwhile (closed): nobody else holds it
            return
        pool.users -= 1
        if pool.users <= 0:
            del pools[key]  # type: ignore[union-attr]
            await client.aclose()

    async def __aenter__(self) -> AsyncQuamotionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def api_root(self, deadline: float | None = None) -> str:
        """The project's API root path, looked up once and cached process-wide.

        Concurrent callers of one event loop share a single ``GET /api/project``: the first starts it,
        the others await its result (or its error: each may try again on its next call).

        :param deadline: give up (with the lookup's last transient error) at this epoch time.
        """
        if self._api_root is None:
            key = _project_key(self.settings)
            root = _PROJECT_ROOTS.get(key)
            if root is None:
                loop = asyncio.get_running_loop()
                lookups = _PROJECT_LOOKUPS.setdefault(loop, {})
                lookup = lookups.get(key)
                if lookup is None:
                    lookup = loop.create_task(self._look_up_project(key, deadline))
                    lookups[key] = lookup
                    lookup.add_done_callback(lambda task: _lookup_done(lookups, key, task))
                root = await asyncio.shield(lookup)
            self._api_root = root
        return self._api_root

    async def _look_up_project(self, key: tuple[str, ...], deadline: float | None) -> str:
        # a client of its own (on the same shared pool): the lookup outlives a caller that is cancelled
        async with AsyncQuamotionClient(self.settings, self.token_provider) as client:
            response = await client.request("GET", api.PROJECTS, deadline=deadline)
        root = project_api_root(parse_json(response), self.settings.project)
        _PROJECT_ROOTS[key] = root
        return root

    async def request(
        self, method: str, endpoint: str, *, deadline: float | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send a request under the transport policy; raises typed errors for non-2xx replies.

        :param method: the HTTP method.
        :param endpoint: as for :meth:`QuamotionSession.request`.
        :param deadline: an absolute time (epoch seconds) the call must not outlive: no retry starts
            whose wait would pass it, waits and each attempt's timeout are cut to the time left. When
            it stops the retries, the last attempt's error is raised (as when retries run out); a
            deadline already passed raises :class:`~airflow_provider_quamotion.exceptions.QuamotionTimeoutError`.
        :param kwargs: passed to ``httpx`` (``params``, ``json``, ``headers``, ``timeout``...).
        """
        import httpx

        method = method.upper()
        self._http()  # join the shared pool first: the project lookup below borrows it too
        needs_root = not (endpoint.startswith("/") or "://" in endpoint)
        root = await self.api_root(deadline) if needs_root else ""
        url = resolve_url(self.settings.base_url, endpoint, lambda: root)
        policy = self.settings.retry
        headers = kwargs.pop("headers", None)
        timeout = kwargs.pop("timeout", self.settings.timeout)

        time_left = time_left_until(deadline)
        where = f"{method} {urlsplit(url).path}"

        async def send(token: str) -> httpx.Response:
            return await self._http().request(
                method,
                url,
                headers=_with_bearer(headers, token),
                timeout=attempt_timeout(timeout, time_left(), where),
                **kwargs,
            )

        async def attempt() -> httpx.Response:
            try:
                token = await self.token_provider.aget_token()
                response = await send(token)
                if response.status_code == 401:
                    self.token_provider.invalidate(token)
                    token = await self.token_provider.aget_token()
                    response = await send(token)
            except httpx.HTTPError as exc:
                failure = transport_error(method, url, exc)
                if is_certificate_failure(exc):
                    raise failure from exc  # a certificate problem does not go away by retrying
                if retry_decision(policy, method, sent=_httpx_failure_sent(exc)):
                    raise _Retry(failure) from exc
                raise failure from exc
            status = response.status_code
            if status >= 400:
                error: QuamotionError = error_for_status(
                    method, url, status, response.content, response.headers
                )
                if retry_decision(policy, method, status=status):
                    raise _Retry(error, retry_after_seconds(response.headers.get("Retry-After")), response)
                raise error
            return response

        retrying = _retrying(policy, method, url, tenacity.AsyncRetrying, time_left)
        try:
            result: httpx.Response = await retrying(attempt)
        except _Retry as exhausted:
            raise exhausted.error from None
        return result


def _lookup_done(
    lookups: dict[tuple[str, ...], asyncio.Task[str]], key: tuple[str, ...], task: asyncio.Task[str]
) -> None:
    if lookups.get(key) is task:
        del lookups[key]
    if not task.cancelled():
        task.exception()  # retrieved here, so a lookup whose waiters all left is not reported as lost


__all__ = [
    "AsyncQuamotionClient",
    "QuamotionSession",
    "TokenProvider",
    "check_destination",
    "error_for_status",
    "is_certificate_failure",
    "iter_json_records",
    "parse_json",
    "project_api_root",
    "resolve_url",
    "retry_after_seconds",
    "retry_decision",
    "wait_seconds",
]
