"""The async client's own pieces: query parameters, SSL contexts, replies and its shared pool."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.auth import token_provider
from airflow_provider_quamotion.exceptions import QuamotionInsecureRequestError
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.settings import QuamotionSettings
from airflow_provider_quamotion.transport import aio
from airflow_provider_quamotion.transport.jsonio import QuamotionResponseTooLargeError
from airflow_provider_quamotion.transport.policy import ASYNC_POOL_SIZE, connects_to


def test_query_params_read_as_the_api_reads_them() -> None:
    assert aio.query_params(None) is None
    assert aio.query_params({}) is None
    assert aio.query_params({"c": None}) is None
    params = {"a": True, "b": False, "c": None, "d": 3, "e": 1.5, "f": "x y", "g": ["p", None, 2]}
    assert aio.query_params(params) == [
        ("a", "true"),
        ("b", "false"),
        ("d", "3"),
        ("e", "1.5"),
        ("f", "x y"),
        ("g", "p"),
        ("g", "2"),
    ]


def test_ssl_contexts_verify_by_default_and_are_built_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aio, "_SSL_CONTEXTS", {})
    system = aio.ssl_context(True)
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert aio.ssl_context(True) is system
    off = aio.ssl_context(False)
    assert off.verify_mode == ssl.CERT_NONE and not off.check_hostname
    with pytest.raises(FileNotFoundError):
        aio.ssl_context(str(tmp_path / "missing.pem"))


def test_aiohttp_s_reading_of_a_url_is_the_one_checked() -> None:
    assert connects_to("https://Cloud.Example:8443/api/x") == ("https", "cloud.example", 8443)
    assert connects_to("https://cloud.example/api") == ("https", "cloud.example", 443)
    assert connects_to("http://[::1]:8080/") == ("http", "::1", 8080)


def _client(sb: Sandbox) -> aio.AsyncQuamotionClient:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    settings: QuamotionSettings = QuamotionHook().settings
    return aio.AsyncQuamotionClient(settings, token_provider(settings))


def test_one_pool_per_loop_and_identity_closed_by_its_last_user(sandbox_conn: Sandbox) -> None:
    async def run() -> None:
        first, second = _client(sandbox_conn), _client(sandbox_conn)
        replies = await asyncio.gather(first.request("GET", api.VERSION), second.request("GET", api.VERSION))
        assert [r.status_code for r in replies] == [200, 200]
        assert first._session is second._session and first._in_flight is second._in_flight
        session = first._session
        assert session is not None and session.connector is not None
        assert session.connector.limit == ASYNC_POOL_SIZE
        await first.aclose()
        assert not session.closed  # the second still uses it
        await second.aclose()
        assert session.closed
        assert not aio._POOLS.get(asyncio.get_running_loop())

    asyncio.run(run())


def test_a_streamed_reply_is_read_within_its_budget_and_its_connection_released(
    sandbox_conn: Sandbox,
) -> None:
    async def run() -> None:
        client = _client(sandbox_conn)
        try:
            reply = await client.request("GET", api.TEST_RUNS, stream=True, max_bytes=1000)
            assert reply.status_code == 200
            with pytest.raises(RuntimeError, match="aread"):
                _ = reply.content  # not read yet
            got = b""
            with pytest.raises(QuamotionResponseTooLargeError, match="1000 bytes"):
                async for chunk in reply.aiter_bytes():
                    got += chunk
            assert len(got) == 1000  # the bytes within the budget came first
            await reply.aclose()
            whole = await client.request("GET", api.VERSION)
            assert whole.content and whole.json() is not None  # read whole, parsed
            session = client._session
            assert session is not None and session.connector is not None
            assert not session.connector._acquired  # both replies gave their connection back
        finally:
            await client.aclose()

    asyncio.run(run())


def test_the_async_client_refuses_an_endpoint_on_another_host(sandbox_conn: Sandbox) -> None:
    async def run() -> None:
        client = _client(sandbox_conn)
        try:
            with pytest.raises(QuamotionInsecureRequestError):
                await client.request("GET", "https://elsewhere.example/api/version")
        finally:
            await client.aclose()

    asyncio.run(run())
