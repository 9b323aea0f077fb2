"""The sandbox's Azure AD emulator and bearer authentication, through real TLS and real msal."""

from __future__ import annotations

import time

import jwt
import msal
import pytest
import requests

from airflow_provider_quamotion.api import DEFAULT_RESOURCE, LOGIN, VERSION
from airflow_provider_quamotion.sandbox import Sandbox

from .conftest import SCOPE, client_credentials, fetch_token, tls_session, token_url


def msal_app(sb: Sandbox, session: requests.Session, *, tenant: str | None = None, secret: str | None = None):
    return msal.ConfidentialClientApplication(
        sb.client_id,
        client_credential=secret or sb.client_secret,
        authority=f"{sb.authority_host}/{tenant or sb.tenant_id}",
        instance_discovery=False,
        azure_region=False,
        http_client=session,
    )


def claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


# --- discovery --------------------------------------------------------------------------------------


def test_openid_configuration_points_at_the_localhost_origin(
    sandbox_faultfree: Sandbox, http: requests.Session
):
    sb = sandbox_faultfree
    doc = http.get(f"{sb.authority_host}/{sb.tenant_id}/v2.0/.well-known/openid-configuration").json()
    assert doc["token_endpoint"] == token_url(sb)
    assert doc["token_endpoint"].startswith("https://localhost:")
    assert doc["authorization_endpoint"].startswith(f"{sb.authority_host}/{sb.tenant_id}/")
    assert doc["issuer"] == f"{sb.authority_host}/{sb.tenant_id}/v2.0"
    assert doc["jwks_uri"].startswith("https://localhost:")
    assert sb.authority_host != sb.api_url  # two origins: a bearer token for the API never goes to AD


def test_openid_configuration_of_an_unknown_tenant_is_aadsts90002(
    sandbox_faultfree: Sandbox, http: requests.Session
):
    response = http.get(
        f"{sandbox_faultfree.authority_host}/no-such-tenant/v2.0/.well-known/openid-configuration"
    )
    assert response.status_code == 400
    assert response.json()["error_codes"] == [90002]


# --- msal end to end --------------------------------------------------------------------------------


def test_msal_token_is_accepted_by_the_api(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    result = msal_app(sb, http).acquire_token_for_client(scopes=[SCOPE])
    assert "access_token" in result, result
    assert result["token_type"] == "Bearer"
    assert claims(result["access_token"])["aud"] == DEFAULT_RESOURCE
    response = http.get(sb.api_url + VERSION, headers={"Authorization": f"Bearer {result['access_token']}"})
    assert response.status_code == 200
    assert response.json()["sandbox"] is True
    assert sb.counters()["tokens_issued"] == 1


def test_one_slash_scope_gets_a_token_the_api_rejects(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    result = msal_app(sb, http).acquire_token_for_client(scopes=["https://cloud.quamotion.mobi/.default"])
    assert "access_token" in result, result
    assert claims(result["access_token"])["aud"] == "https://cloud.quamotion.mobi"
    response = http.get(sb.api_url + VERSION, headers={"Authorization": f"Bearer {result['access_token']}"})
    assert response.status_code == 401
    assert "audience" in response.headers["WWW-Authenticate"]


def test_msal_wrong_secret_is_aadsts7000215(sandbox_faultfree: Sandbox, http: requests.Session):
    result = msal_app(sandbox_faultfree, http, secret="wrong").acquire_token_for_client(scopes=[SCOPE])
    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [7000215]
    assert result["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")


def test_msal_unknown_tenant_fails_discovery(sandbox_faultfree: Sandbox, http: requests.Session):
    # As with Azure AD, msal cannot even build the app: discovery of the unknown tenant answers 400.
    with pytest.raises(ValueError, match="tenant name or GUID is correct"):
        msal_app(sandbox_faultfree, http, tenant="11111111-2222-3333-4444-555555555555")


@pytest.mark.filterwarnings("ignore:Using /common:DeprecationWarning")
def test_msal_common_tenant_is_refused_for_client_credentials(
    sandbox_faultfree: Sandbox, http: requests.Session
):
    result = msal_app(sandbox_faultfree, http, tenant="common").acquire_token_for_client(scopes=[SCOPE])
    assert result["error"] == "invalid_request"
    assert result["error_codes"] == [50059]


@pytest.mark.parametrize(
    ("scope", "error", "code"),
    [
        ("https://cloud.quamotion.mobi/", "invalid_scope", 1002012),
        ("https://example.com//.default", "invalid_resource", 500011),
    ],
)
def test_msal_scope_errors(
    sandbox_faultfree: Sandbox, http: requests.Session, scope: str, error: str, code: int
):
    result = msal_app(sandbox_faultfree, http).acquire_token_for_client(scopes=[scope])
    assert result["error"] == error
    assert result["error_codes"] == [code]


# --- the token endpoint's rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "overrides", "status", "error", "code"),
    [
        ("other", {}, 400, "invalid_request", 90002),
        (None, {"client_id": "00000000-0000-0000-0000-000000000000"}, 400, "unauthorized_client", 700016),
        (None, {"client_secret": "nope"}, 401, "invalid_client", 7000215),
        (None, {"client_secret": ""}, 401, "invalid_client", 7000216),
        (None, {"grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        (None, {"scope": "https://cloud.quamotion.mobi//user_impersonation"}, 400, "invalid_scope", 1002012),
        (None, {"scope": "api://something-else/.default"}, 400, "invalid_resource", 500011),
    ],
)
def test_token_endpoint_errors_follow_azure_ad(
    sandbox_faultfree: Sandbox,
    http: requests.Session,
    tenant: str | None,
    overrides: dict[str, str],
    status: int,
    error: str,
    code: int,
):
    sb = sandbox_faultfree
    response = http.post(
        token_url(sb, tenant),
        data=client_credentials(sb, **overrides),
        headers={"client-request-id": "corr-1"},
    )
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_codes"] == [code]
    assert body["correlation_id"] == "corr-1"
    description = body["error_description"]
    assert description.startswith(f"AADSTS{code}: ")
    assert f"\r\nTrace ID: {body['trace_id']}\r\nCorrelation ID: corr-1\r\nTimestamp: " in description
    assert {"timestamp", "error_uri"} <= set(body)
    assert sb.counters()["tokens_issued"] == 0


def test_token_endpoint_success_shape_and_claims(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    first = http.post(token_url(sb), data=client_credentials(sb)).json()
    second = http.post(token_url(sb), data=client_credentials(sb)).json()
    assert set(first) == {"token_type", "expires_in", "ext_expires_in", "access_token"}
    assert first["expires_in"] == 3600
    c = claims(first["access_token"])
    assert c["aud"] == DEFAULT_RESOURCE
    assert c["tid"] == sb.tenant_id
    assert c["appid"] == sb.client_id
    assert c["exp"] - c["iat"] == 3600
    assert c["nbf"] <= c["iat"]
    assert c["iss"].endswith(f"/{sb.tenant_id}/")
    assert c["jti"] != claims(second["access_token"])["jti"]


def test_client_secret_basic_is_accepted(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    form = {"grant_type": "client_credentials", "scope": SCOPE}
    response = http.post(token_url(sb), data=form, auth=(sb.client_id, sb.client_secret))
    assert response.status_code == 200, response.text


# --- bearer authentication on the API ----------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer " + jwt.encode({"aud": DEFAULT_RESOURCE}, "a-different-signing-key-of-32-bytes"),
    ],
)
def test_api_requires_a_valid_bearer(
    sandbox_faultfree: Sandbox, http: requests.Session, authorization: str | None
):
    headers = {"Authorization": authorization} if authorization else {}
    response = http.get(sandbox_faultfree.api_url + VERSION, headers=headers)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="invalid_token", error_description="')
    assert response.json()["error"] == "invalid_token"


def test_unknown_paths_need_auth_first(sandbox_faultfree: Sandbox, http: requests.Session):
    assert http.get(sandbox_faultfree.api_url + "/api/nothing-here").status_code == 401


def test_revocation(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    old = {"Authorization": f"Bearer {fetch_token(sb, http)}"}
    assert http.get(sb.api_url + VERSION, headers=old).status_code == 200
    sb.revoke_tokens()
    response = http.get(sb.api_url + VERSION, headers=old)
    assert response.status_code == 401
    assert "revoked" in response.headers["WWW-Authenticate"]
    new = {"Authorization": f"Bearer {fetch_token(sb, http)}"}
    assert http.get(sb.api_url + VERSION, headers=new).status_code == 200


def test_short_token_lifetime_expires(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    sb.set_faults({"rules": [], "token_lifetime": 1})
    reply = http.post(token_url(sb), data=client_credentials(sb)).json()
    assert reply["expires_in"] == 1
    headers = {"Authorization": f"Bearer {reply['access_token']}"}
    time.sleep(2.05)
    response = http.get(sb.api_url + VERSION, headers=headers)
    assert response.status_code == 401
    assert "expired" in response.headers["WWW-Authenticate"]
    sb.clear_faults()
    assert http.post(token_url(sb), data=client_credentials(sb)).json()["expires_in"] == 3600


# --- API key login -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["apiKey", "ApiKey"])
def test_api_key_login(sandbox_faultfree: Sandbox, http: requests.Session, field: str):
    sb = sandbox_faultfree
    response = http.post(sb.api_url + LOGIN, data={field: sb.api_key})
    assert response.status_code == 200
    doc = response.json()
    assert set(doc) == {
        "token_type",
        "expires_in",
        "ext_expires_in",
        "expires_on",
        "not_before",
        "resource",
        "access_token",
    }
    assert doc["resource"] == DEFAULT_RESOURCE
    assert int(doc["expires_on"]) - int(doc["not_before"]) == int(doc["expires_in"]) == 3600
    assert claims(doc["access_token"])["aud"] == DEFAULT_RESOURCE
    ok = http.get(sb.api_url + VERSION, headers={"Authorization": f"Bearer {doc['access_token']}"})
    assert ok.status_code == 200
    assert sb.counters()["logins"] == 1


def test_api_key_login_rejects_a_wrong_key(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    response = http.post(sb.api_url + LOGIN, data={"apiKey": "wrong"})
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_api_key"
    assert http.post(sb.api_url + LOGIN, data={}).status_code == 400
    assert sb.counters()["logins"] == 0


def test_tls_is_verified_against_the_sandbox_ca(sandbox_faultfree: Sandbox):
    with requests.Session() as session:
        session.trust_env = False
        session.verify = True  # the system bundle does not know the sandbox's CA
        with pytest.raises(requests.exceptions.SSLError):
            session.get(sandbox_faultfree.api_url + VERSION)
    with tls_session(sandbox_faultfree) as session:
        # The certificate covers both origins (and [::1]); a valid TLS handshake reaches the auth check.
        port = sandbox_faultfree.api_url.rsplit(":", 1)[1]
        for origin in (sandbox_faultfree.authority_host, sandbox_faultfree.api_url, f"https://[::1]:{port}"):
            assert session.get(origin + VERSION).status_code == 401
