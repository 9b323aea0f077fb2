"""The sandbox's HTTPS server: the ASGI app on uvicorn (one worker, TLS) bound to loopback sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from airflow_provider_quamotion.sandbox.app import build_app, install_log_filter
from airflow_provider_quamotion.sandbox.context import SandboxContext
from airflow_provider_quamotion.sandbox.options import ServerOptions
from airflow_provider_quamotion.sandbox.state import (
    CONNECTION_FILE,
    Credentials,
    connection_document,
    origin,
    write_private,
)
from airflow_provider_quamotion.sandbox.tls import ensure_tls

BACKLOG = 2048
#: In-flight responses (a long stream) get this long to finish when the server stops.
GRACEFUL_SHUTDOWN_SECONDS = 3
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class SandboxServer:
    """The sandbox's HTTPS server (one uvicorn worker) bound to its sockets.

    Creating it makes the state dir's certificates and credentials if needed and binds the port;
    :meth:`run` serves until :meth:`stop` (or SIGINT/SIGTERM in the main thread), writing
    ``connection.json`` once ready and removing it on the way out.

    :param state_dir: where certificates, credentials and ``connection.json`` live.
    :param options: the server's data, timing and fault settings.
    :param host: the address to listen on (``127.0.0.1`` also listens on ``::1`` when it can).
    :param port: the port; 0 picks a free one.
    :param access_log: log every request (slows the server down).
    :param exit_with_parent: stop when the parent process goes away (for servers run by :class:`Sandbox`).
    """

    def __init__(
        self,
        state_dir: str | Path,
        options: ServerOptions | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        access_log: bool = False,
        exit_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.tls = ensure_tls(self.state_dir)
        self.credentials = Credentials.load_or_create(self.state_dir)
        self.ctx = SandboxContext(self.credentials, options or ServerOptions())
        self.sockets = _bind(host, port)
        self.port: int = self.sockets[0].getsockname()[1]
        self.api_url = origin("127.0.0.1" if host in WILDCARD_HOSTS else host, self.port)
        self.authority_host = origin("localhost", self.port)
        self.connection_path = self.state_dir / CONNECTION_FILE
        self._exit_with_parent = exit_with_parent
        install_log_filter()
        config = uvicorn.Config(
            build_app(self.ctx),
            ssl_certfile=str(self.tls.server_cert),
            ssl_keyfile=str(self.tls.server_key),
            loop="auto",
            http="auto",
            ws="none",
            lifespan="off",
            workers=1,
            backlog=BACKLOG,
            limit_concurrency=None,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            access_log=access_log,
            log_level="info" if access_log else "warning",
            server_header=False,
        )
        self._server = _QuietServer(config)

    @property
    def connection(self) -> dict[str, Any]:
        """The Airflow connection document for this server."""
        return connection_document(
            self.credentials,
            api_url=self.api_url,
            authority_host=self.authority_host,
            ca_path=self.tls.ca_cert,
        )

    def run(self, on_ready: Callable[[SandboxServer], None] | None = None) -> None:
        """Serve until stopped (blocking).

        :param on_ready: called once the server accepts connections and ``connection.json`` is written.
        """
        factory = self._server.config.get_loop_factory()
        loop = factory() if factory else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.serve(on_ready))
        finally:
            loop.close()

    async def serve(self, on_ready: Callable[[SandboxServer], None] | None = None) -> None:
        """Serve until stopped, in the running event loop.

        :param on_ready: called once the server accepts connections and ``connection.json`` is written.
        """
        watcher = asyncio.ensure_future(self._when_ready(on_ready))
        try:
            await self._server.serve(sockets=self.sockets)
        finally:
            watcher.cancel()
            self.connection_path.unlink(missing_ok=True)
            for sock in self.sockets:
                sock.close()

    def stop(self) -> None:
        """Ask the server to shut down (thread-safe)."""
        self._server.should_exit = True

    async def _when_ready(self, on_ready: Callable[[SandboxServer], None] | None) -> None:
        while not self._server.started:
            await asyncio.sleep(0.02)
        write_private(self.connection_path, json.dumps(self.connection, indent=2) + "\n")
        if on_ready is not None:
            on_ready(self)
        parent = os.getppid()
        while self._exit_with_parent:
            await asyncio.sleep(0.5)
            if os.getppid() != parent:
                self.stop()
                return


class _QuietServer(uvicorn.Server):
    """uvicorn's server, stopping promptly and with exit code 0.

    uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown (exit code -15); this one does not.
    An idle keep-alive TLS connection would hold the shutdown until the TLS close handshake times
    out (the client never answers it): idle connections are aborted instead.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for connection in list(self.server_state.connections):
            cycle = getattr(connection, "cycle", None)
            transport = getattr(connection, "transport", None)
            if transport is not None and (cycle is None or cycle.response_complete):
                transport.abort()
        await super().shutdown(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets: ``host:port`` and, for ``127.0.0.1``, ``[::1]`` on the same port when possible."""

    def listen(addr: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((addr, port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        return sock

    first = listen(host or "0.0.0.0", port)
    sockets = [first]
    if host == "127.0.0.1" and socket.has_ipv6:
        with contextlib.suppress(OSError):
            sockets.append(listen("::1", first.getsockname()[1]))
    return sockets
