"""Issue 10's trust boundary, black box: credentials go nowhere else, secrets never appear in text,
two tenants in one process never share a cache entry, auth trouble never blocks the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote_plus

import pytest
import requests_mock as rm

from airflow_provider_quamotion.auth import CachedTokenProvider, Token, TokenCache
from airflow_provider_quamotion.exceptions import (
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionError,
    QuamotionInsecureRequestError,
    QuamotionResponseError,
)
from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
from airflow_provider_quamotion.settings import RetryPolicy, settings_from_connection
from tests.mocks import AUTHORITY, HOST, SECRET, TENANT, connection_json, mock_aad

FAST = RetryPolicy(max_attempts=1)
#: Opaque (non-JWT) tokens and secrets of odd shapes: what a shape-based redactor would miss.
KEYS = {"alpha": "key+alpha/with=odd&chars%20ü", "beta": 'key beta "quoted" 42'}
TOKENS = {"alpha": "opaque.alpha-token-7c1d", "beta": "opaque.beta-token-93ab"}


@dataclass
class Hostile:
    """A local API server with two tenants (by API key) and a catcher of anything sent elsewhere."""

    port: int = 0
    catcher_port: int = 0
    caught: list[tuple[str, str, str | None, bytes]] = field(default_factory=list)
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)
    login_reply: tuple[int, str, dict[str, str]] | None = None  # status, body, headers
    api_reply: tuple[int, str] | None = None

    def conn(self, tenant: str, **extra: Any) -> str:
        return json.dumps(
            {
                "conn_type": "quamotion",
                "host": f"http://127.0.0.1:{self.port}",
                "extra": {"api_key": KEYS[tenant], **extra},
            }
        )


def _server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hostile() -> Iterator[Hostile]:
    state = Hostile()

    class Base(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def reply(self, status: int, body: str, ctype: str = "application/json", **headers: str) -> None:
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    class Catcher(Base):
        def do_GET(self) -> None:
            state.caught.append(("GET", self.path, self.headers.get("Authorization"), b""))
            self.reply(200, "{}")

        def do_POST(self) -> None:
            state.caught.append(("POST", self.path, self.headers.get("Authorization"), self.body()))
            self.reply(200, json.dumps({"access_token": "stolen", "expires_in": 3600}))

    class Api(Base):
        def tenant(self) -> str | None:
            auth = self.headers.get("Authorization") or ""
            return next((t for t, tok in TOKENS.items() if auth == f"Bearer {tok}"), None)

        def do_GET(self) -> None:
            state.seen.append(("GET", self.path, self.headers.get("Authorization")))
            tenant = self.tenant()
            if tenant is None:
                self.reply(401, '{"error": "unauthorized"}')
            elif state.api_reply is not None:
                self.reply(state.api_reply[0], state.api_reply[1], "text/html")
            elif self.path == "/api/project":
                self.reply(200, json.dumps([{"name": tenant, "relativeUrl": f"/project/{tenant}/"}]))
            elif self.path.startswith("/project/"):
                owner = self.path.split("/")[2]
                self.reply(200 if owner == tenant else 403, json.dumps([{"testRunId": f"{owner}-run"}]))
            else:
                self.reply(200, json.dumps({"version": "hostile", "tenant": tenant}))

        def do_POST(self) -> None:
            body = self.body().decode()
            state.seen.append(("POST", self.path, self.headers.get("Authorization")))
            if state.login_reply is not None:
                status, text, headers = state.login_reply
                self.reply(status, text, "text/html", **headers)
                return
            key = (parse_qs(body).get("apiKey") or [""])[0]
            tenant = next((t for t, k in KEYS.items() if k == key), None)
            if tenant is None:
                self.reply(400, f"<html>unknown key {key}</html>", "text/html")
            else:
                self.reply(200, json.dumps({"access_token": TOKENS[tenant], "expires_in": 3600}))

    api, catcher = _server(Api), _server(Catcher)
    state.port, state.catcher_port = api.server_address[1], catcher.server_address[1]
    try:
        yield state
    finally:
        for server in (api, catcher):
            server.shutdown()
            server.server_close()


# --- credentials go nowhere else ---------------------------------------------------------------------


def test_a_backslash_endpoint_never_takes_the_bearer_to_another_host(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", hostile.conn("alpha"))
    trick = f"http://127.0.0.1:{hostile.catcher_port}\\@127.0.0.1:{hostile.port}/api/version"
    with pytest.raises(QuamotionInsecureRequestError):
        QuamotionHook(retry=FAST).request("GET", trick)

    async def call() -> None:
        hook = QuamotionAsyncHook(retry=FAST)
        try:
            await hook.request("GET", trick)
        finally:
            await hook.aclose()

    with pytest.raises(QuamotionInsecureRequestError):
        asyncio.run(call())
    assert hostile.caught == []


def test_a_backslash_host_in_the_connection_is_a_config_error(hostile: Hostile) -> None:
    with pytest.raises(QuamotionConfigError, match="backslash"):
        settings_from_connection(
            conn_id="c",
            host=f"http://127.0.0.1:{hostile.catcher_port}\\@127.0.0.1:{hostile.port}",
            login=None,
            password=None,
            extra={"api_key": KEYS["alpha"]},
        )
    assert hostile.caught == []


@pytest.mark.parametrize("status", [307, 308])
def test_the_api_key_login_follows_no_redirect(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    hostile.login_reply = (status, "", {"Location": f"http://127.0.0.1:{hostile.catcher_port}/login"})
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", hostile.conn("alpha"))
    with pytest.raises(QuamotionAuthError, match="redirect"):
        QuamotionHook(retry=FAST).get_version()
    assert hostile.caught == []


@pytest.mark.parametrize("status", [307, 308])
def test_the_token_request_follows_no_redirect(monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        base = f"{AUTHORITY}/{TENANT}"
        m.post(
            f"{base}/oauth2/v2.0/token",
            status_code=status,
            headers={"Location": "https://elsewhere.example/steal"},
        )
        stolen = m.post("https://elsewhere.example/steal", json={"access_token": "x", "expires_in": 60})
        with pytest.raises(QuamotionAuthError, match="redirect"):
            QuamotionHook(retry=FAST).get_token()
    assert stolen.call_count == 0


def test_an_api_redirect_never_re_sends_a_body_to_another_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/project", json=[{"name": "acme", "relativeUrl": "/project/acme/"}])
        m.post(
            f"{HOST}/project/acme/api/testRun", status_code=307, headers={"Location": "https://x.example/r"}
        )
        elsewhere = m.post("https://x.example/r", json={})
        with pytest.raises(QuamotionInsecureRequestError, match="re-send the request's body"):
            QuamotionHook(retry=FAST).request("POST", "testRun", json={"app": "secret payload"})
    assert elsewhere.call_count == 0


# --- one team never in another team's project -----------------------------------------------------


def test_two_api_key_tenants_on_one_host_keep_their_own_projects(
    hostile: Hostile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ALPHA", hostile.conn("alpha"))
    monkeypatch.setenv("AIRFLOW_CONN_BETA", hostile.conn("beta"))
    alpha, beta = QuamotionHook("alpha", retry=FAST), QuamotionHook("beta", retry=FAST)
    assert alpha.list_test_runs() == [{"testRunId": "alpha-run"}]
    assert beta.list_test_runs() == [{"testRunId": "beta-run"}]
    assert alpha.get_version()["tenant"] == "alpha" and beta.get_version()["tenant"] == "beta"

    async def both() -> list[Any]:
        hooks = [QuamotionAsyncHook("alpha", retry=FAST), QuamotionAsyncHook("beta", retry=FAST)]
        try:
            replies = await asyncio.gather(*(h.request("GET", "testRun") for h in hooks))
            return [r.json() for r in replies]
        finally:
            for hook in hooks:
                await hook.aclose()

    assert asyncio.run(both()) == [[{"testRunId": "alpha-run"}], [{"testRunId": "beta-run"}]]
    forbidden = [
        s for s in hostile.seen if s[1].startswith("/project/beta") and s[2] == f"Bearer {TOKENS['alpha']}"
    ]
    assert forbidden == []


# --- secrets never appear in text -------------------------------------------------------------------


def test_an_echoed_api_key_reaches_no_message(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", hostile.conn("alpha"))
    key = KEYS["alpha"]
    for status in (400, 500, 200):
        hostile.login_reply = (status, f"<html>bad key {key} / {quote_plus(key)}</html>", {})
        ok, message = QuamotionHook(retry=FAST).test_connection()
        assert not ok
        assert key not in message and quote_plus(key) not in message, message
        with pytest.raises(QuamotionError) as info:
            QuamotionHook(retry=FAST).get_version()
        assert key not in str(info.value) and key not in repr(info.value)
        assert quote_plus(key) not in str(info.value)


def test_an_echoed_opaque_token_reaches_no_message(hostile: Hostile, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", hostile.conn("alpha"))
    hostile.api_reply = (400, f"<p>your header was {TOKENS['alpha']}</p>")
    with pytest.raises(QuamotionError) as info:
        QuamotionHook(retry=FAST).get_version()
    assert "your header was ***" in str(info.value)
    assert TOKENS["alpha"] not in str(info.value)


def test_msal_logging_a_non_json_token_reply_leaks_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    odd = "s3cr3t+with/odd=chars&ü%41"
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json(password=odd))
    with rm.Mocker() as m, caplog.at_level(logging.DEBUG):
        mock_aad(m)
        m.post(
            f"{AUTHORITY}/{TENANT}/oauth2/v2.0/token",
            text=f"<html>client_id=x&client_secret={quote_plus(odd)} raw {odd}</html>",
            headers={"Content-Type": "text/html"},
        )
        with pytest.raises(QuamotionError) as info:
            QuamotionHook(retry=FAST).get_token()
    texts = [r.getMessage() for r in caplog.records] + [str(info.value), repr(info.value)]
    assert any("msal" in r.name for r in caplog.records), "msal's own logging should be in the scan"
    assert [t for t in texts if odd in t or quote_plus(odd) in t] == []


def test_settings_repr_hides_secrets_and_proxy_passwords() -> None:
    settings = settings_from_connection(
        conn_id="c",
        host="https://cloud.example",
        login="id",
        password=SECRET,
        extra={"api_key": "an-api-key-123", "proxies": {"https": "http://user:pr0xy-pa55@proxy:3128"}},
    )
    text = repr(settings)
    assert "pr0xy-pa55" not in text and SECRET not in text and "an-api-key-123" not in text
    assert "proxy:3128" in text


# --- auth trouble never blocks the event loop ------------------------------------------------------


class _SlowSource:
    """A token source whose fetch blocks until released (Azure AD taking its time)."""

    key = ("slow",)

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.finished = threading.Event()
        self.forgotten = 0

    def fetch(self) -> Token:
        self.started.set()
        self.release.wait(10)
        self.finished.set()
        return Token("fresh-token-value", time.time() + 3600, 3600)

    def forget(self) -> None:
        self.forgotten += 1


def test_invalidate_on_the_event_loop_never_waits_for_a_token_fetch() -> None:
    cache = TokenCache()
    source = _SlowSource()
    provider = CachedTokenProvider(source, cache)
    cache._tokens[source.key] = Token("rejected-token", time.time() + 3600, 3600)

    async def scenario() -> bool:
        cache._tokens.pop(source.key)  # expired: the next get fetches (slowly, in a thread)
        fetch = asyncio.ensure_future(provider.aget_token())
        await asyncio.to_thread(source.started.wait, 10)
        done = threading.Event()

        def on_loop() -> None:
            provider.invalidate("rejected-token")
            done.set()

        asyncio.get_running_loop().call_soon(on_loop)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        returned_while_fetching = done.is_set() and not source.finished.is_set()
        source.release.set()
        assert await fetch == "fresh-token-value"
        return returned_while_fetching

    assert asyncio.run(scenario()) is True


def test_a_rejected_token_is_dropped_below_the_cache_by_the_next_fetch() -> None:
    cache = TokenCache()
    source = _SlowSource()
    source.release.set()
    provider = CachedTokenProvider(source, cache)
    token = provider.get_token()
    provider.invalidate(token)
    assert source.forgotten == 0  # nothing below the cache is touched by invalidate itself
    assert provider.get_token() == "fresh-token-value"
    assert source.forgotten == 1


def test_the_sync_project_lookup_turns_html_into_a_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/project", text="<html>maintenance</html>", headers={"Content-Type": "text/html"})
        with pytest.raises(QuamotionResponseError, match="not JSON"):
            QuamotionHook(retry=FAST).list_test_runs()


@pytest.mark.parametrize("location", ["http://[::1:80/x", "https://own\\@other/x", "https://a b/"])
def test_a_bad_location_header_is_one_typed_error(monkeypatch: pytest.MonkeyPatch, location: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", connection_json())
    with rm.Mocker() as m:
        mock_aad(m)
        m.get(f"{HOST}/api/version", status_code=302, headers={"Location": location})
        with pytest.raises(QuamotionError):
            QuamotionHook(retry=FAST).request("GET", "/api/version")
