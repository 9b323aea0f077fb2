"""TLS verification is on by default; the bearer never leaves its origin, not even through a redirect."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionInsecureRequestError
from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.settings import RetryPolicy, settings_from_connection
from airflow_provider_quamotion.transport import check_destination

TOKEN = "opaque-bearer-3f9a1c"
API_KEY = "local-api-key-77"
FAST = RetryPolicy(max_attempts=1)


@dataclass
class Recorder:
    """What a local server saw: ``(method, path, Authorization header or None)`` per request."""

    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    redirect_to: str = ""

    def authorizations(self, path_prefix: str = "") -> list[str | None]:
        return [auth for _, path, auth in self.seen if path.startswith(path_prefix)]


def _serve(host: str, recorder: Recorder, *, api: bool) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            recorder.seen.append(("GET", self.path, self.headers.get("Authorization")))
            if not api:
                self._reply(200, {"captured": True})
            elif self.path == "/api/project":
                self._reply(200, [{"name": "local", "relativeUrl": "/project/local/"}])
            elif self.path == "/away":
                self._reply(302, headers={"Location": recorder.redirect_to})
            elif self.path == "/here":
                self._reply(302, headers={"Location": "/api/version"})
            else:
                self._reply(200, {"version": "local"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            recorder.seen.append(("POST", self.path, self.headers.get("Authorization")))
            if self.path == "/api/login" and f"apiKey={API_KEY}" in body:
                self._reply(200, {"token_type": "Bearer", "expires_in": "3600", "access_token": TOKEN})
            else:
                self._reply(401, {"error": "invalid_api_key"})

    server = ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


@dataclass
class Servers:
    api: Recorder
    far: Recorder  # on 127.0.0.2: plain http to a host the provider does not count as loopback
    near: Recorder  # on 127.0.0.1, another port: another origin on this machine
    far_port: int
    near_port: int


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Servers]:
    """An API on http://127.0.0.1 (loopback: plain http allowed) and two catchers on other origins."""
    api_rec, far, near = Recorder(), Recorder(), Recorder()
    started = [_serve("127.0.0.1", api_rec, api=True), _serve("127.0.0.2", far, api=False)]
    started.append(_serve("127.0.0.1", near, api=False))
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT",
        json.dumps(
            {
                "conn_type": "quamotion",
                "host": f"http://127.0.0.1:{started[0][1]}",
                "extra": {"api_key": API_KEY},
            }
        ),
    )
    try:
        yield Servers(api_rec, far, near, started[1][1], started[2][1])
    finally:
        for server, _ in started:
            server.shutdown()
            server.server_close()


def test_same_origin_redirect_keeps_the_bearer(servers: Servers) -> None:
    assert QuamotionHook(retry=FAST).request("GET", "/here").json() == {"version": "local"}
    assert servers.api.authorizations("/api/version") == [f"Bearer {TOKEN}"]  # the control: headers are seen


def test_redirect_to_a_non_loopback_http_host_drops_the_bearer(servers: Servers) -> None:
    servers.api.redirect_to = f"http://127.0.0.2:{servers.far_port}/stolen"
    assert QuamotionHook(retry=FAST).request("GET", "/away").json() == {"captured": True}
    assert servers.api.authorizations("/away") == [f"Bearer {TOKEN}"]
    assert servers.far.seen == [("GET", "/stolen", None)]


def test_redirect_to_another_origin_on_this_machine_drops_the_bearer(servers: Servers) -> None:
    servers.api.redirect_to = f"http://127.0.0.1:{servers.near_port}/stolen"
    assert QuamotionHook(retry=FAST).request("GET", "/away").json() == {"captured": True}
    assert servers.near.seen == [("GET", "/stolen", None)]


def test_a_request_to_another_origin_is_refused_before_sending(servers: Servers) -> None:
    hook = QuamotionHook(retry=FAST)
    for url in (f"http://127.0.0.2:{servers.far_port}/x", f"http://127.0.0.1:{servers.near_port}/x"):
        with pytest.raises(QuamotionInsecureRequestError, match="goes only to the connection's own origin"):
            hook.request("GET", url)
    assert servers.far.seen == [] and servers.near.seen == []


def test_plain_http_to_a_non_loopback_host_is_refused() -> None:
    with pytest.raises(QuamotionInsecureRequestError, match="travels only over https"):
        check_destination("http://10.1.2.3/api/version", "http://10.1.2.3")


def test_the_async_client_does_not_follow_a_redirect_with_the_bearer(servers: Servers) -> None:
    servers.api.redirect_to = f"http://127.0.0.2:{servers.far_port}/stolen"

    async def call() -> int:
        hook = QuamotionAsyncHook(retry=FAST)
        try:
            return int((await hook.request("GET", "/away")).status_code)
        finally:
            await hook.aclose()

    assert asyncio.run(call()) == 302
    assert servers.api.authorizations("/away") == [f"Bearer {TOKEN}"]
    assert servers.far.seen == []


# --- TLS verification --------------------------------------------------------------------------------


def _without_verify(sb: Sandbox, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> None:
    conn = json.loads(sb.connection_json)
    conn["extra"].pop("verify")
    conn["extra"].update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", json.dumps(conn))


def test_tls_verification_is_on_by_default() -> None:
    settings = settings_from_connection(
        conn_id="c", host="https://cloud.example", login="id", password="secret", extra={}
    )
    assert settings.verify is True


def test_an_unknown_certificate_is_refused_whatever_the_environment_says(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_verify(sandbox_conn, monkeypatch)
    # The environment trusts the sandbox's CA; the connection (verify on, system CAs) governs.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox_conn.ca_path)
    monkeypatch.setenv("SSL_CERT_FILE", sandbox_conn.ca_path)
    with pytest.raises(QuamotionError, match=r"(?i)verify"):
        QuamotionHook(retry=FAST).get_version()

    async def call() -> None:
        hook = QuamotionAsyncHook(retry=FAST)
        try:
            await hook.request("GET", "/api/version")
        finally:
            await hook.aclose()

    with pytest.raises(QuamotionError, match=r"(?i)verify|certificate"):
        asyncio.run(call())


def test_verify_false_works_but_logs_a_warning(
    sandbox_conn: Sandbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _without_verify(sandbox_conn, monkeypatch, verify="false")
    with caplog.at_level(logging.WARNING):
        assert QuamotionHook().get_version()["sandbox"] is True
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("turns TLS verification off" in w for w in warnings), warnings
