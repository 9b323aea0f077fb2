"""The async client: :class:`AsyncQuamotionClient` on ``httpx``, for triggers.

Same URL resolution, destination checks, retry decisions, waits, 401 renewal and errors as the sync
client (:mod:`~airflow_provider_quamotion.transport.policy`); pooled ``httpx`` clients and SSL
contexts are shared per event loop and per credentials identity.
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionError, register_secret
from airflow_provider_quamotion.transport import project
from airflow_provider_quamotion.transport.jsonio import MAX_BODY_BYTES, body_budget, parse_json
from airflow_provider_quamotion.transport.policy import (
    _DEFAULT_PORTS,
    ASYNC_POOL_SIZE,
    ASYNC_SHARD_SIZE,
    RetryableFailure,
    TokenProvider,
    attempt_timeout,
    check_connects_to,
    dropped_retry_after,
    error_for_status,
    is_certificate_failure,
    resolve_url,
    retrier,
    retry_after_seconds,
    retry_decision,
    time_left_until,
    transport_error,
    with_bearer,
)

if TYPE_CHECKING:
    import httpx

    from airflow_provider_quamotion.settings import QuamotionSettings


def _httpx_failure_sent(exc: Exception) -> bool:
    import httpx

    return not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


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


def sharded_transport(
    make: Callable[[httpx.Limits], httpx.AsyncBaseTransport],
    connections: int = ASYNC_POOL_SIZE,
    shard_size: int = ASYNC_SHARD_SIZE,
) -> httpx.AsyncBaseTransport:
    """An ``httpx`` transport of ``connections`` connections in pools of at most ``shard_size``.

    httpcore scans every connection of its pool when a request is assigned and when one is released
    (and, for each idle connection, counts the idle ones again), so one pool of 100 connections spends
    more CPU choosing a connection than sending the request (encode/httpcore#1035). Each request goes
    to the shard with the fewest requests in flight; every connection is kept alive (triggers
    sharing one client poll in bursts, and httpx's default, 20 kept of 100, would redo TLS handshakes
    on each burst).

    :param make: builds one shard's transport with the given limits.
    :param connections: connections in all.
    :param shard_size: connections per shard.
    """
    import httpx

    count = max(1, -(-connections // shard_size))
    size = -(-connections // count)
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    shards = [make(limits) for _ in range(count)]
    return shards[0] if count == 1 else _sharded_class()(shards)


@functools.cache
def _sharded_class() -> Callable[[list[httpx.AsyncBaseTransport]], httpx.AsyncBaseTransport]:
    """The sharded transport's classes, defined on first use (``httpx`` is imported lazily)."""
    import httpx

    class Released(httpx.AsyncByteStream):
        """A response body that gives its shard's slot back when closed."""

        def __init__(self, inner: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
            self.inner, self.release = inner, release

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for chunk in self.inner:
                yield chunk

        async def aclose(self) -> None:
            try:
                await self.inner.aclose()
            finally:
                self.release()
                self.release = _nothing

    class Sharded(httpx.AsyncBaseTransport):
        """Requests spread over several transports, each to the one with the fewest in flight."""

        def __init__(self, shards: list[httpx.AsyncBaseTransport]) -> None:
            self.shards = shards
            self.busy = [0] * len(shards)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            k = min(range(len(self.busy)), key=self.busy.__getitem__)
            self.busy[k] += 1

            def release() -> None:
                self.busy[k] -= 1

            try:
                response = await self.shards[k].handle_async_request(request)
            except BaseException:
                release()
                raise
            assert isinstance(response.stream, httpx.AsyncByteStream)
            response.stream = Released(response.stream, release)
            return response

        async def aclose(self) -> None:
            for shard in self.shards:
                await shard.aclose()

    return Sharded


def _nothing() -> None:
    return None


@dataclass
class _Pool:
    """One ``httpx.AsyncClient`` of an event loop, and how many :class:`AsyncQuamotionClient` use it."""

    client: httpx.AsyncClient
    users: int = 0
    #: Requests in flight on this pool, at most its size: thousands of triggers then wait here, in
    #: a FIFO semaphore, instead of in httpcore's queue, whose assignment of requests to connections
    #: costs (queued x connections) per request (encode/httpcore#1035).
    in_flight: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ASYNC_POOL_SIZE))


#: Per event loop: one pooled ``httpx.AsyncClient`` per credentials identity (origin, TLS, proxies,
#: hashed secrets): a pool holds cookies and connections, which one tenant must not hand another.
_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], _Pool]] = (
    weakref.WeakKeyDictionary()
)


def _pool_key(settings: QuamotionSettings) -> tuple[str, ...]:
    return settings.identity()


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
        self._in_flight: asyncio.Semaphore | None = None

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
            self._client, self._pool_loop, self._in_flight = pool.client, loop, pool.in_flight
        return self._client

    def _new_http(self) -> httpx.AsyncClient:
        import httpx

        context = ssl_context(self.settings.verify)
        origin = self.settings.origin

        async def guard(request: httpx.Request) -> None:
            # the last check before the socket opens, on httpx's own reading of the URL
            url = request.url
            check_connects_to((url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme, 0)), origin)

        def transport(proxy: str | None) -> httpx.AsyncBaseTransport:
            return sharded_transport(
                lambda limits: httpx.AsyncHTTPTransport(
                    verify=context, trust_env=False, limits=limits, proxy=proxy
                )
            )

        mounts = {f"{scheme}://": transport(url) for scheme, url in (self.settings.proxies or {}).items()}
        return httpx.AsyncClient(
            verify=context,
            timeout=self.settings.timeout,
            trust_env=False,
            follow_redirects=False,
            transport=transport(None),
            mounts=mounts or None,
            event_hooks={"request": [guard]},
        )

    async def aclose(self) -> None:
        """Stop using the shared pool; the last user closes its connections."""
        client, loop = self._client, self._pool_loop
        self._client = self._pool_loop = self._in_flight = None
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
        async with AsyncQuamotionClient(self.settings, self.token_provider) as client:
            response = await client.request("GET", api.PROJECTS, deadline=deadline)
        return parse_json(response)

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        deadline: float | None = None,
        stream: bool = False,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request under the transport policy; raises typed errors for non-2xx replies.

        :param method: the HTTP method.
        :param endpoint: as for :meth:`QuamotionSession.request`.
        :param deadline: an absolute time (epoch seconds) the call must not outlive: no retry starts
            whose wait would pass it, waits and each attempt's timeout are cut to the time left. When
            it stops the retries, the last attempt's error is raised (as when retries run out); a
            deadline already passed raises :class:`~airflow_provider_quamotion.exceptions.QuamotionTimeoutError`.
        :param stream: return once the headers arrived; the caller reads the body (``aiter_bytes()``,
            still within the byte budget and the deadline) and closes the reply (``aclose()``).
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
        # every body is read within a byte budget and the deadline (a caller may pass its own auth=)
        kwargs.setdefault("auth", body_budget(MAX_BODY_BYTES, deadline))
        timeout = kwargs.pop("timeout", self.settings.timeout)

        time_left = time_left_until(deadline)
        where = f"{method} {urlsplit(url).path}"

        async def send(token: str) -> httpx.Response:
            register_secret(token)
            http = self._http()
            assert self._in_flight is not None  # set with the pool
            async with self._in_flight:
                if stream:
                    auth = kwargs.get("auth")
                    request = http.build_request(
                        method,
                        url,
                        headers=with_bearer(headers, token),
                        timeout=attempt_timeout(timeout, time_left(), where),
                        **{k: v for k, v in kwargs.items() if k != "auth"},
                    )
                    return await http.send(request, auth=auth, stream=True)
                return await http.request(
                    method,
                    url,
                    headers=with_bearer(headers, token),
                    timeout=attempt_timeout(timeout, time_left(), where),
                    **kwargs,
                )

        async def attempt() -> httpx.Response:
            try:
                token = await self.token_provider.aget_token()
                response = await send(token)
                if response.status_code == 401:
                    await response.aclose()
                    self.token_provider.invalidate(token)
                    token = await self.token_provider.aget_token()
                    response = await send(token)
                if stream and response.status_code >= 400:
                    await response.aread()  # the error's body, within the budget; then the reply closes
            except httpx.HTTPError as exc:
                failure = transport_error(method, url, exc)
                if is_certificate_failure(exc):
                    raise failure from exc  # a certificate problem does not go away by retrying
                if retry_decision(policy, method, sent=_httpx_failure_sent(exc)):
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
            result: httpx.Response = await retrier(policy).acall(method, url, attempt, time_left)
        except RetryableFailure as exhausted:
            raise exhausted.error from None
        return result


__all__ = ["AsyncQuamotionClient", "ssl_context"]
