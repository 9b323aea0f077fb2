"""Clients of the session sandbox: plain TLS sessions (never trusting the environment's CA bundle)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from airflow_provider_quamotion.api import DEFAULT_RESOURCE
from airflow_provider_quamotion.sandbox import Sandbox

#: The scope Quamotion needs: its resource (with the trailing slash) + "/.default".
SCOPE = DEFAULT_RESOURCE + "/.default"


def tls_session(sb: Sandbox) -> requests.Session:
    """A requests session that verifies with the sandbox's CA only (REQUESTS_CA_BUNDLE is set here)."""
    session = requests.Session()
    session.trust_env = False
    session.verify = sb.ca_path
    return session


def token_url(sb: Sandbox, tenant: str | None = None) -> str:
    """The sandbox's Azure AD v2 token endpoint for a tenant (the sandbox's own by default)."""
    return f"{sb.authority_host}/{tenant or sb.tenant_id}/oauth2/v2.0/token"


def client_credentials(sb: Sandbox, **overrides: str) -> dict[str, str]:
    """The form of a client-credentials token request, with fields overridden."""
    return {
        "grant_type": "client_credentials",
        "client_id": sb.client_id,
        "client_secret": sb.client_secret,
        "scope": SCOPE,
        **overrides,
    }


def fetch_token(sb: Sandbox, session: requests.Session, scope: str = SCOPE) -> str:
    """An access token from the sandbox's token endpoint."""
    response = session.post(token_url(sb), data=client_credentials(sb, scope=scope), timeout=10)
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def http(sandbox_faultfree: Sandbox) -> Iterator[requests.Session]:
    """An unauthenticated session."""
    with tls_session(sandbox_faultfree) as session:
        yield session


@pytest.fixture
def api(sandbox_faultfree: Sandbox) -> Iterator[requests.Session]:
    """A session carrying a valid bearer token."""
    with tls_session(sandbox_faultfree) as session:
        session.headers["Authorization"] = f"Bearer {fetch_token(sandbox_faultfree, session)}"
        yield session


@pytest.fixture
def project_url(sandbox_faultfree: Sandbox) -> str:
    """The first project's API root, e.g. ``https://127.0.0.1:PORT/project/sandbox/api/``."""
    return sandbox_faultfree.project_url
