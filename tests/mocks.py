"""Helpers for unit tests that mock Quamotion Cloud and Azure AD with requests-mock."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import requests_mock as rm

from airflow_provider_quamotion import auth
from airflow_provider_quamotion.transport import project

HOST = "https://cloud.quamotion.mobi"
AUTHORITY = "https://login.microsoftonline.com"
TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "client-id-123"
SECRET = "s3cret-value-ABCDEF"
API_KEY = "apikey-value-XYZ987"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ4In0.signature-one"
TOKEN2 = "eyJhbGciOiJIUzI1NiJ9.eyJhdWQiOiJ5In0.signature-two"
PROJECTS = [{"name": "acme", "tenantId": 22, "gitLabId": 1, "flags": 0, "relativeUrl": "/project/acme/"}]


def reset_process_caches() -> None:
    """Forget process-wide tokens, msal apps and project roots between tests."""
    auth.TOKEN_CACHE.clear()
    auth.TOKEN_CACHE.fetches = 0
    auth.MsalClientCredentials._apps.clear()
    project.clear()


def connection_json(**extra: Any) -> str:
    """A quamotion connection in AIRFLOW_CONN_* JSON form."""
    host = extra.pop("host", HOST)
    login = extra.pop("login", CLIENT_ID)
    password = extra.pop("password", SECRET)
    base_extra = {"tenant_id": TENANT}
    base_extra.update(extra)
    return json.dumps(
        {"conn_type": "quamotion", "host": host, "login": login, "password": password, "extra": base_extra}
    )


def mock_aad_error(m: rm.Mocker, status: int, body: dict[str, Any], *, tenant: str = TENANT) -> Any:
    """Mock Azure AD's openid configuration and a token endpoint that answers an error."""
    base = f"{AUTHORITY}/{tenant}"
    m.get(
        f"{base}/v2.0/.well-known/openid-configuration",
        json={"authorization_endpoint": f"{base}/a", "token_endpoint": f"{base}/oauth2/v2.0/token"},
    )
    return m.post(f"{base}/oauth2/v2.0/token", status_code=status, json=body)


def mock_aad(
    m: rm.Mocker, *, tokens: list[str] | None = None, tenant: str = TENANT, **token_reply: Any
) -> Any:
    """Mock Azure AD's openid configuration and token endpoint; returns the token endpoint matcher."""
    base = f"{AUTHORITY}/{tenant}"
    m.get(
        f"{base}/v2.0/.well-known/openid-configuration",
        json={
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "issuer": f"{AUTHORITY}/{tenant}/v2.0",
        },
    )
    replies = [
        {"json": {"access_token": t, "expires_in": 3600, "token_type": "Bearer", **token_reply}}
        for t in (tokens or [TOKEN])
    ]
    return m.post(f"{base}/oauth2/v2.0/token", replies)


def mock_projects(m: rm.Mocker, projects: list[dict[str, Any]] | None = None) -> Any:
    """Mock GET /api/project."""
    return m.get(f"{HOST}/api/project", json=PROJECTS if projects is None else projects)


class _MockedBody:
    """The part of ``aiohttp``'s ``StreamReader`` the async client reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done = not data

    async def _chunks(self, size: int) -> Any:
        for start in range(0, len(self.data), size):
            yield self.data[start : start + size]
        self.done = True

    def iter_any(self) -> Any:
        """The body in pieces of 64 KiB, as a socket would deliver a long one."""
        return self._chunks(65536)

    def at_eof(self) -> bool:
        return self.done


class _MockedReply:
    """The part of ``aiohttp.ClientResponse`` the async client reads, from a requests-mock reply."""

    def __init__(self, reply: Any) -> None:
        from multidict import CIMultiDict, CIMultiDictProxy

        self.status = reply.status_code
        self.headers = CIMultiDictProxy(CIMultiDict(reply.headers))
        self.charset = reply.encoding
        self.content = _MockedBody(reply.content)

    def release(self) -> None:
        return None

    def close(self) -> None:
        return None


@contextlib.contextmanager
def aiohttp_through(mocker: rm.Mocker) -> Iterator[None]:
    """Serve the async client's (``aiohttp``) requests from ``mocker``'s requests-mock registrations.

    The jobs export fans out through the async client; with this, a unit test registers its replies
    once, with requests-mock, for both clients, and its ``request_history`` sees both. No socket is
    opened for :data:`HOST`: ``aiohttp.ClientSession.request`` is replaced (after the client's own
    destination check); requests of other aiohttp users (adlfs to Azurite) go through unchanged.
    """
    from unittest import mock

    import aiohttp
    import requests

    original = aiohttp.ClientSession.request

    async def request(client: Any, method: str, url: Any, **kwargs: Any) -> Any:
        if not str(url).startswith(f"{HOST}/"):  # another service's aiohttp (adlfs, Azurite)
            return await original(client, method, url, **kwargs)
        with requests.Session() as session:
            reply = session.request(
                method,
                str(url),
                params=kwargs.get("params"),
                headers=kwargs.get("headers"),
                json=kwargs.get("json"),
                data=kwargs.get("data"),
                allow_redirects=False,
            )
        return _MockedReply(reply)

    with mock.patch.object(aiohttp.ClientSession, "request", request):
        yield
