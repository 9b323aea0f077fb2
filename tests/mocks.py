"""Helpers for unit tests that mock Quamotion Cloud and Azure AD with requests-mock."""

from __future__ import annotations

import json
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
