"""The sync client: :class:`QuamotionSession`, a ``requests.Session`` under the transport policy."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionInsecureRequestError,
    QuamotionResponseError,
    register_secret,
)
from airflow_provider_quamotion.transport import project
from airflow_provider_quamotion.transport.jsonio import parse_json
from airflow_provider_quamotion.transport.policy import (
    DEFAULT_POOL_SIZE,
    RetryableFailure,
    TokenProvider,
    attempt_timeout,
    check_destination,
    destination_of,
    dropped_retry_after,
    error_for_status,
    origin_of,
    request_label,
    resolve_url,
    retrier,
    retry_after_seconds,
    retry_decision,
    time_left_until,
    transport_error,
    with_bearer,
)

if TYPE_CHECKING:
    from airflow_provider_quamotion.settings import QuamotionSettings

log = logging.getLogger("airflow_provider_quamotion.transport")


class GuardedAdapter(HTTPAdapter):
    """The last check before a socket opens: credentials and bodies go to the session's origin only.

    ``requests`` hands the prepared request here after every redirect and header merge; the URL is
    read with urllib3's parser, the one that picks the host to connect to. A request that carries an
    ``Authorization`` header or a body (a client secret, an API key, a test-run request) and is not
    bound for ``origin`` over https (http on loopback) is refused.

    :param origin: the only origin credentials may go to.
    """

    def __init__(self, origin: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.origin = origin

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        """Check the destination of ``request``, then send it."""
        if "Authorization" in request.headers or request.body is not None:
            check_destination(request.url or "", self.origin)
        return super().send(request, *args, **kwargs)


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

    Redirects: a session with ``follow_redirects=False`` (token requests, API key login) follows none
    and answers a 3xx with :class:`~airflow_provider_quamotion.exceptions.QuamotionInsecureRequestError`.
    Otherwise a redirect to another origin loses the ``Authorization`` header, and one that would
    re-send a body there (307/308 of a POST) is refused.

    :param settings: the connection's settings.
    :param token_provider: where bearer tokens come from; ``None`` sends no ``Authorization`` header.
    :param origin: the only origin this session talks to (default: the API's).
    :param raise_for_status: raise typed errors for non-2xx replies.
    :param pool_size: connections kept per host (raise it for concurrent fan-out).
    :param safe_to_repeat: every request of this session may be repeated whatever its method (token
        requests: a POST that has no side effect), so retries follow the idempotent rules.
    :param follow_redirects: follow redirects at all (never for requests that carry a secret).
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
        follow_redirects: bool = True,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.token_provider = token_provider
        self.allowed_origin = origin or settings.origin
        self.raise_for_status_enabled = raise_for_status
        self.safe_to_repeat = safe_to_repeat
        self.follow_redirects = follow_redirects
        self.trust_env = False
        self.verify = settings.verify
        self.proxies = dict(settings.proxies or {})
        adapter = GuardedAdapter(
            self.allowed_origin, pool_connections=4, pool_maxsize=pool_size, max_retries=0
        )
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self._api_root: str | None = None
        self._api_root_lock = threading.Lock()
        self._retrier = retrier(settings.retry)

    def __repr__(self) -> str:
        return f"<QuamotionSession {self.allowed_origin}>"

    # URL resolution --------------------------------------------------------------------------------

    def api_root(self, deadline: float | None = None) -> str:
        """The project's API root path, looked up once per credentials (``GET /api/project``).

        :param deadline: an absolute time (epoch seconds) the lookup must not outlive.
        """
        if self._api_root is None:
            self._api_root = project.resolve(
                self.settings, lambda: parse_json(self.request("GET", api.PROJECTS, deadline=deadline))
            )
        return self._api_root

    def url_for(self, endpoint: str, deadline: float | None = None) -> str:
        """The absolute URL of ``endpoint`` (see :func:`~airflow_provider_quamotion.transport.policy.resolve_url`)."""
        base = self.allowed_origin if self.allowed_origin != self.settings.origin else self.settings.base_url
        return resolve_url(base, endpoint, lambda: self.api_root(deadline))

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
        deadline = kwargs.pop("deadline", None)
        full_url = self.url_for(url.decode() if isinstance(url, bytes) else url, deadline)
        time_left = time_left_until(deadline)
        timeout = kwargs.pop("timeout", self.settings.timeout)
        if not self.follow_redirects:
            kwargs["allow_redirects"] = False
        where = request_label(method, full_url)
        rewind = _rewinder(kwargs.get("files"), kwargs.get("data"))

        def attempt() -> requests.Response:
            rewind()
            kwargs["timeout"] = attempt_timeout(timeout, time_left(), where)
            try:
                response = self._send_with_renewal(method, full_url, kwargs)
            except ValueError as exc:  # requests parsing a reply's Location header (a bad redirect)
                if isinstance(exc, requests.RequestException):
                    raise
                raise QuamotionResponseError(
                    f"{where}: the reply could not be followed ({exc}); its redirect (Location header) "
                    "is not a valid URL.",
                    method=method,
                    url=full_url,
                ) from None
            status = response.status_code
            if status >= 400 and retry_decision(self.settings.retry, retry_as, status=status):
                error = error_for_status(method, full_url, status, _peek_body(response), response.headers)
                after = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
                raise RetryableFailure(error, after, response)
            return response

        def guarded() -> requests.Response:
            try:
                return attempt()
            except requests.RequestException as exc:
                error = transport_error(method, full_url, exc, time_left())
                if isinstance(exc, requests.exceptions.SSLError):
                    raise error from exc  # a certificate problem does not go away by retrying
                if retry_decision(self.settings.retry, retry_as, sent=_requests_failure_sent(exc)):
                    raise RetryableFailure(error, dropped_retry_after(exc)) from exc
                raise error from exc

        try:
            response: requests.Response = self._retrier.call(method, full_url, guarded, time_left)
        except RetryableFailure as exhausted:
            if not self.raise_for_status_enabled and exhausted.response is not None:
                return exhausted.response
            raise exhausted.error from None
        if not self.follow_redirects and response.is_redirect:
            target = origin_of(urljoin(full_url, response.headers.get("Location", "")))
            response.close()
            raise QuamotionInsecureRequestError(
                f"{where} answered HTTP {response.status_code}, a redirect to {target!r}; a request that "
                "carries a secret follows no redirect. Check the host (authority_host or the API base URL)."
            )
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
        register_secret(token)
        response = super().request(method, url, headers=with_bearer(kwargs.get("headers"), token), **rest)
        if response.status_code == 401:
            log.info("%s: HTTP 401, renewing the token and trying once more", request_label(method, url))
            response.close()
            self.token_provider.invalidate(token)
            _rewinder(kwargs.get("files"), kwargs.get("data"))()
            token = self.token_provider.get_token()
            register_secret(token)
            response = super().request(method, url, headers=with_bearer(kwargs.get("headers"), token), **rest)
        return response

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        """On a redirect off this session's origin: drop ``Authorization``, refuse to re-send a body."""
        url = prepared_request.url or ""
        try:
            check_destination(url, self.allowed_origin)
        except QuamotionInsecureRequestError:
            try:
                destination_of(url)
            except QuamotionInsecureRequestError as err:
                raise QuamotionResponseError(
                    f"Refused to follow a {response.status_code} redirect: {err}", url=url
                ) from None
            prepared_request.headers.pop("Authorization", None)
            prepared_request.headers.pop("Cookie", None)
            if prepared_request.body is not None:
                raise QuamotionInsecureRequestError(
                    f"Refused to follow a {response.status_code} redirect to {origin_of(url)!r}: it would "
                    "re-send the request's body to another origin."
                ) from None
            log.warning("Redirect to %s: the bearer token was not forwarded", origin_of(url))


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
    for payload in payloads:
        _collect_streams(payload, streams)
    if not streams:
        return _no_rewind

    def rewind() -> None:
        for stream, position in streams:
            stream.seek(position)

    return rewind


def _collect_streams(value: Any, streams: list[tuple[Any, int]]) -> None:
    """Append ``(stream, position)`` for every seekable file in ``value`` (nested in dicts, lists)."""
    if hasattr(value, "seek") and hasattr(value, "tell"):
        with contextlib.suppress(OSError, ValueError):
            streams.append((value, value.tell()))
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect_streams(item, streams)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_streams(item, streams)


def _no_rewind() -> None:
    """Nothing to rewind (a request without files)."""


__all__ = ["GuardedAdapter", "QuamotionSession"]
