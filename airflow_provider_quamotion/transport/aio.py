"""The async client: :class:`AsyncQuamotionClient` on ``aiohttp``, for triggers and the jobs fan-out.

Same URL resolution, destination checks, retry decisions, waits, 401 renewal and errors as the sync
client (:mod:`~airflow_provider_quamotion.transport.policy`); pooled ``aiohttp`` sessions and SSL
contexts are shared per event loop and per credentials identity.

Why ``aiohttp``: thousands of triggers in one triggerer make the async client's CPU per request the
limit. Measured on the sandbox (2 cores, keep-alive TLS, 200 concurrent GETs of a job list, one
process): ``httpx`` 0.28 spent about 1.1 ms of CPU per request even with its pool split into shards
(httpcore scans every pooled connection, with a ``select`` each, when it assigns one,
encode/httpcore#1035), ``aiohttp`` about 0.1 ms (its HTTP parser is in C, its pool hands a connection
over in O(1)).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionError, register_secret
from airflow_provider_quamotion.transport import project
from airflow_provider_quamotion.transport.jsonio import (
    MAX_BODY_BYTES,
    abounded_body,
    check_content_encoding,
    parse_json,
)
from airflow_provider_quamotion.transport.policy import (
    ASYNC_POOL_SIZE,
    RetryableFailure,
    TokenProvider,
    attempt_timeout,
    check_connects_to,
    connects_to,
    dropped_retry_after,
    error_for_status,
    is_certificate_failure,
    needs_api_root,
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
    import aiohttp

    from airflow_provider_quamotion.settings import QuamotionSettings

#: Seconds an idle pooled connection is kept (triggers poll every few seconds to minutes).
KEEPALIVE_SECONDS = 30.0


def _failure_sent(exc: BaseException) -> bool:
    """Whether an ``aiohttp`` failure may have happened after the request reached the server."""
    import aiohttp

    return not isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


#: SSL contexts by ``verify`` setting (and, for a CA path, its size and modification time): loading
#: a CA bundle costs milliseconds of CPU, which 1,000 triggers must not each spend in the event loop.
_SSL_CONTEXTS: dict[tuple[Any, ...], ssl.SSLContext] = {}
_SSL_CONTEXTS_LOCK = threading.Lock()


def ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The ``SSLContext`` of a ``verify`` setting, built once per setting per process.

    ``True`` is the system CAs (certifi's bundle, as ``requests`` uses), ``False`` no verification,
    a path a CA bundle (or a directory of CAs). A changed bundle (size or modification time) is
    loaded again. The environment (``SSL_CERT_FILE``) plays no part.
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
            elif verify:
                import certifi

                context = ssl.create_default_context(cafile=certifi.where())
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            for stale in [k for k in _SSL_CONTEXTS if k[:2] == key[:2]]:
                del _SSL_CONTEXTS[stale]
            _SSL_CONTEXTS[key] = context
        return context


def query_params(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters as text, the way ``httpx`` and the API read them: booleans as
    ``true``/``false``, ``None`` left out, a list or tuple as the key repeated (``aiohttp`` takes
    none of these as they are)."""
    if not params:
        return None

    def text(value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    out: list[tuple[str, str]] = []
    for key, value in params.items():
        values = value if isinstance(value, list | tuple) else [value]
        out.extend((str(key), text(v)) for v in values if v is not None)
    return out or None


class AsyncReply:
    """A reply of :class:`AsyncQuamotionClient`: its status, headers and a body read within the
    request's byte budget and deadline.

    A reply of a plain request has its body read (:attr:`content`); a streamed one
    (``stream=True``) is read with :meth:`aiter_bytes` (or :meth:`aread`) and closed with
    :meth:`aclose`.

    :param response: the ``aiohttp`` response (headers received, body not read).
    :param method: the request's method.
    :param url: the request's URL.
    :param max_bytes: the budget of the decoded body.
    :param deadline: when the whole body must have arrived (epoch seconds).
    """

    def __init__(
        self, response: aiohttp.ClientResponse, method: str, url: str, max_bytes: int, deadline: float | None
    ) -> None:
        self._response = response
        self.status_code = int(response.status)
        self.headers = response.headers
        self.method = method
        self.url = url
        where = request_label(method, url)
        decoder = check_content_encoding(response.headers.get("Content-Encoding"), where)
        self._body = abounded_body(
            response.content.iter_any(),
            where=where,
            decoder=decoder,
            max_bytes=max_bytes,
            deadline=deadline,
        )
        self._content: bytes | None = None

    @property
    def request(self) -> AsyncReply:
        """The reply itself (error messages read ``reply.request.method``, as for ``requests``); a
        property, not an attribute: a reply that referred to itself would be a reference cycle,
        left for the garbage collector instead of freed at once."""
        return self

    @property
    def encoding(self) -> str | None:
        """The charset the reply declares, if any."""
        return self._response.charset

    @property
    def content(self) -> bytes:
        """The whole body (read by the client, or by :meth:`aread` for a streamed reply)."""
        if self._content is None:
            raise RuntimeError("the body of a streamed reply is read with aread() or aiter_bytes()")
        return self._content

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        import json

        return json.loads(self.content)

    async def aread(self) -> bytes:
        """Read the whole body (within the budget and the deadline) and release the connection."""
        if self._content is None:
            try:
                self._content = b"".join([chunk async for chunk in self._body])
            except BaseException:
                await self.aclose(broken=True)
                raise
            self._response.release()
        return self._content

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives (decoded, within the budget and the deadline)."""
        async for chunk in self._body:
            yield chunk

    async def aclose(self, broken: bool = False) -> None:
        """Stop reading: a body read to its end gives its connection back to the pool, any other
        closes the connection.

        :param broken: close the connection whatever was read.
        """
        with contextlib.suppress(Exception):
            await self._body.aclose()  # type: ignore[attr-defined]
        if broken or not self._response.content.at_eof():
            self._response.close()
        else:
            self._response.release()

    def __repr__(self) -> str:
        return f"<AsyncReply {request_label(self.method, self.url)} {self.status_code}>"


@dataclass
class _Pool:
    """One ``aiohttp.ClientSession`` of an event loop, and how many :class:`AsyncQuamotionClient` use it."""

    session: aiohttp.ClientSession
    #: Requests in flight on this pool, at most its size: when thousands of triggers wake at once,
    #: they wait here (a cheap FIFO) rather than each building its request first, so the work ready
    #: in one turn of the event loop stays small.
    in_flight: asyncio.Semaphore
    users: int = 0


#: Per event loop: one pooled ``aiohttp.ClientSession`` per credentials identity (origin, TLS,
#: proxies, hashed secrets): a pool holds connections, which one tenant must not hand another.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Pool]] = (
    weakref.WeakKeyDictionary()
)


def _pool_key(settings: QuamotionSettings, size: int) -> tuple[str, ...]:
    return (*settings.identity(), str(size))


class AsyncQuamotionClient:
    """The async twin of :class:`QuamotionSession`, on ``aiohttp``, for triggers.

    Same URL resolution, guard, retry decisions, waits, 401 renewal and errors; tokens come from the
    same process-wide cache without blocking the event loop.

    Every client of an event loop with the same origin, TLS and proxy settings shares one pooled
    ``aiohttp.ClientSession`` (at most :data:`ASYNC_POOL_SIZE` connections, one ``SSLContext``, no
    cookies, redirects never followed, bodies never decompressed by ``aiohttp``), closed when its last
    user closes; the project is looked up once per process, with one request in flight whatever the
    number of callers.

    :param settings: the connection's settings.
    :param token_provider: where bearer tokens come from.
    :param pool_size: connections, and requests in flight, of the shared pool (a fan-out's
        ``max_concurrency``); clients of another size have a pool of their own.
    """

    def __init__(
        self, settings: QuamotionSettings, token_provider: TokenProvider, *, pool_size: int = ASYNC_POOL_SIZE
    ) -> None:
        self.settings = settings
        self.token_provider = token_provider
        self.pool_size = max(1, int(pool_size))
        self._session: aiohttp.ClientSession | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: asyncio.Semaphore | None = None
        self._api_root: str | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            loop = asyncio.get_running_loop()
            pools = _POOLS.setdefault(loop, {})
            key = _pool_key(self.settings, self.pool_size)
            pool = pools.get(key)
            if pool is None or pool.session.closed:
                pool = _Pool(self._new_http(), in_flight=asyncio.Semaphore(self.pool_size))
                pools[key] = pool
            pool.users += 1
            self._session, self._pool_loop, self._in_flight = pool.session, loop, pool.in_flight
        return self._session

    def _new_http(self) -> aiohttp.ClientSession:
        import aiohttp

        connector = aiohttp.TCPConnector(
            limit=self.pool_size,
            limit_per_host=0,
            ssl=ssl_context(self.settings.verify),
            keepalive_timeout=KEEPALIVE_SECONDS,
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # decoded by jsonio within the body's budget
            trust_env=False,
            raise_for_status=False,
        )

    async def aclose(self) -> None:
        """Stop using the shared pool; the last user closes its connections."""
        session, loop = self._session, self._pool_loop
        self._session = self._pool_loop = self._in_flight = None
        if session is None:
            return
        pools = _POOLS.get(loop) if loop is not None else None
        key = _pool_key(self.settings, self.pool_size)
        pool = pools.get(key) if pools is not None else None
        if pool is None or pool.session is not session:
            await session.close()  # a pool replaced meanwhile (closed): nobody else holds it
            return
        pool.users -= 1
        if pool.users <= 0:
            del pools[key]  # type: ignore[union-attr]
            await session.close()

    async def __aenter__(self) -> AsyncQuamotionClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def api_root(self, deadline: float | None = None) -> str:
        """The project's API root path, looked up once per credentials and cached process-wide.

        Concurrent callers of one event loop share a single ``GET /api/project`` (see
        :func:`~airflow_provider_quamotion.transport.project.aresolve`).

        :param deadline: give up (with the lookup's last transient error) at this epoch time.
        """
        if self._api_root is None:
            self._api_root = await project.aresolve(self.settings, lambda: self._fetch_projects(deadline))
        return self._api_root

    async def _fetch_projects(self, deadline: float | None) -> Any:
        # a client of its own (on the same shared pool): the lookup outlives a caller that is cancelled
        async with AsyncQuamotionClient(
            self.settings, self.token_provider, pool_size=self.pool_size
        ) as client:
            response = await client.request("GET", api.PROJECTS, deadline=deadline)
        return parse_json(response)

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        deadline: float | None = None,
        stream: bool = False,
        max_bytes: int = MAX_BODY_BYTES,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AsyncReply:
        """Send a request under the transport policy; raises typed errors for non-2xx replies.

        :param method: the HTTP method.
        :param endpoint: as for :meth:`QuamotionSession.request`.
        :param deadline: an absolute time (epoch seconds) the call must not outlive: no retry starts
            whose wait would pass it, waits and each attempt's timeout are cut to the time left, and
            the body must have arrived by then. When it stops the retries, the last attempt's error is
            raised (as when retries run out); a deadline already passed raises
            :class:`~airflow_provider_quamotion.exceptions.QuamotionTimeoutError`.
        :param stream: return once the headers arrived; the caller reads the body
            (``aiter_bytes()``, still within ``max_bytes`` and the deadline) and closes the reply
            (``aclose()``).
        :param max_bytes: the budget of the decoded body
            (:class:`~airflow_provider_quamotion.transport.jsonio.QuamotionResponseTooLargeError` past it).
        :param params: query parameters.
        :param headers: extra request headers.
        :param timeout: seconds per attempt (connect and each read; the whole attempt for a plain
            request); the connection's ``timeout`` by default.
        :param kwargs: passed to ``aiohttp`` (``json``, ``data``).
        """
        import aiohttp

        method = method.upper()
        self._http()  # join the shared pool first: the project lookup below borrows it too
        root = await self.api_root(deadline) if needs_api_root(endpoint) else ""
        url = resolve_url(self.settings.base_url, endpoint, lambda: root)
        destination = connects_to(url)
        proxy = (self.settings.proxies or {}).get(destination[0])
        policy = self.settings.retry
        query = query_params(params)
        per_attempt = self.settings.timeout if timeout is None else timeout
        time_left = time_left_until(deadline)
        where = request_label(method, url)

        async def send(token: str) -> AsyncReply:
            register_secret(token)
            http = self._http()
            assert self._in_flight is not None  # set with the session
            # the last check before the socket opens, on aiohttp's own reading of the URL
            check_connects_to(destination, self.settings.origin)
            async with self._in_flight:  # a streamed reply gives its slot back once its headers came
                seconds = attempt_timeout(per_attempt, time_left(), where)
                limits = (
                    aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
                    if stream
                    else aiohttp.ClientTimeout(total=seconds)
                )
                sent_headers = with_bearer(headers, token)
                sent_headers["Accept-Encoding"] = "identity"
                response = await http.request(
                    method,
                    url,
                    params=query,
                    headers=sent_headers,
                    timeout=limits,
                    allow_redirects=False,
                    proxy=proxy,
                    **kwargs,
                )
                try:
                    reply = AsyncReply(response, method, url, max_bytes, deadline)
                    if not stream or reply.status_code >= 400:
                        await reply.aread()  # an error's body too, within the budget; then it closes
                except BaseException:
                    response.close()
                    raise
            return reply

        async def attempt() -> AsyncReply:
            try:
                token = await self.token_provider.aget_token()
                response = await send(token)
                if response.status_code == 401:
                    await response.aclose()
                    self.token_provider.invalidate(token)
                    token = await self.token_provider.aget_token()
                    response = await send(token)
            except (aiohttp.ClientError, TimeoutError) as exc:
                failure = transport_error(method, url, exc, time_left())
                if is_certificate_failure(exc):
                    raise failure from exc  # a certificate problem does not go away by retrying
                if retry_decision(policy, method, sent=_failure_sent(exc)):
                    raise RetryableFailure(failure, dropped_retry_after(exc)) from exc
                raise failure from exc
            status = response.status_code
            if status >= 400:
                error: QuamotionError = error_for_status(
                    method, url, status, response.content, response.headers
                )
                if retry_decision(policy, method, status=status):
                    raise RetryableFailure(
                        error, retry_after_seconds(response.headers.get("Retry-After")), response
                    )
                raise error
            return response

        try:
            result: AsyncReply = await retrier(policy).acall(method, url, attempt, time_left)
        except RetryableFailure as exhausted:
            raise exhausted.error from None
        return result


__all__ = ["AsyncQuamotionClient", "AsyncReply", "ssl_context"]
