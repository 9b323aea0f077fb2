"""An Azure AD (Microsoft Entra ID) emulator: OpenID discovery and the v2 token endpoint (client credentials).

Error replies follow Azure AD's shape and codes, so clients see what they would see in production.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_quamotion.api import DEFAULT_RESOURCE
from airflow_provider_quamotion.sandbox.context import SandboxContext

OPENID_CONFIG = "/{tenant}/v2.0/.well-known/openid-configuration"
TOKEN = "/{tenant}/oauth2/v2.0/token"
KEYS = "/{tenant}/discovery/v2.0/keys"
INSTANCE_DISCOVERY = "/common/discovery/instance"
#: Resources the tenant knows: Quamotion's (as registered, with the slash) and its one-slash form, which
#: Azure AD also resolves, issuing a token whose ``aud`` lacks the slash (the API then rejects it).
KNOWN_RESOURCES = frozenset({DEFAULT_RESOURCE, DEFAULT_RESOURCE.rstrip("/")})
MULTI_TENANT_ALIASES = frozenset({"common", "organizations", "consumers"})
DEFAULT_SCOPE_SUFFIX = "/.default"
PUBLIC_PATH_SUFFIXES = (
    "/v2.0/.well-known/openid-configuration",
    "/oauth2/v2.0/token",
    "/discovery/v2.0/keys",
)


def is_ad_path(path: str) -> bool:
    """Whether a path belongs to the Azure AD origin (these never require a bearer token).

    :param path: the request path.
    """
    return path == INSTANCE_DISCOVERY or (path.count("/") == 4 and path.endswith(PUBLIC_PATH_SUFFIXES))


def authority_origin(request: Request) -> str:
    """The AD origin on the port this request came in on (``https://localhost:PORT``)."""
    server = request.scope.get("server") or ("localhost", 443)
    return f"https://localhost:{server[1]}"


def aad_error(
    request: Request, status: int, error: str, code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An Azure AD error reply.

    :param request: the request being answered.
    :param status: the HTTP status.
    :param error: the OAuth error (``invalid_client``...).
    :param code: the AADSTS number.
    :param message: the AADSTS message.
    :param headers: extra response headers.
    """
    trace_id = str(uuid.uuid4())
    correlation_id = request.headers.get("client-request-id") or str(uuid.uuid4())
    now = dt.datetime.now(dt.timezone.utc)
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": error,
        "error_description": (
            f"AADSTS{code}: {message}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\n"
            f"Timestamp: {now.strftime('%Y-%m-%d %H:%M:%S')}Z"
        ),
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": f"{authority_origin(request)}/error?code={code}",
    }
    return JSONResponse(body, status, headers={"Cache-Control": "no-store", **(headers or {})})


def _tenant_not_found(request: Request, tenant: str, error: str) -> JSONResponse:
    return aad_error(
        request,
        400,
        error,
        90002,
        f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into "
        "the correct cloud. Check with your subscription administrator, this may happen if there are no "
        "active subscriptions for the tenant.",
    )


def build_ad_routes(ctx: SandboxContext) -> list[Route]:
    """The AD origin's routes.

    :param ctx: the sandbox's state.
    """
    tenant_id = ctx.credentials.tenant_id

    def known_tenant(tenant: str) -> bool:
        return tenant.lower() == tenant_id or tenant.lower() in MULTI_TENANT_ALIASES

    async def openid_configuration(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        if not known_tenant(tenant):
            return _tenant_not_found(request, tenant, "invalid_tenant")
        base = f"{authority_origin(request)}/{tenant}"
        issuer_tenant = tenant_id if tenant.lower() == tenant_id else "{tenantid}"
        return JSONResponse(
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{authority_origin(request)}/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": f"{authority_origin(request)}/oidc/userinfo",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "appid", "oid", "jti"],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            }
        )

    async def keys(request: Request) -> Response:
        # Sandbox tokens are HS256-signed with a private key: there is no public key to publish.
        return JSONResponse({"keys": []})

    async def instance_discovery(request: Request) -> Response:
        origin = authority_origin(request)
        return JSONResponse(
            {
                "tenant_discovery_endpoint": f"{origin}/{tenant_id}/v2.0/.well-known/openid-configuration",
                "api-version": "1.1",
                "metadata": [{"preferred_network": origin.removeprefix("https://"), "aliases": []}],
            }
        )

    async def token(request: Request) -> Response:
        tenant = request.path_params["tenant"]
        form = await request.form()
        fields: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
        basic = _basic_credentials(request)
        if basic:
            fields.setdefault("client_id", basic[0])
            fields.setdefault("client_secret", basic[1])
        if tenant.lower() in MULTI_TENANT_ALIASES:
            return aad_error(
                request,
                400,
                "invalid_request",
                50059,
                "No tenant-identifying information found in either the request or implied by any provided "
                "credentials. Use a specific tenant (a GUID or a domain), not 'common', for client credentials.",
            )
        if tenant.lower() != tenant_id:
            return _tenant_not_found(request, tenant, "invalid_request")
        for name in ("grant_type", "client_id"):
            if not fields.get(name):
                return _missing(request, name)
        if fields["grant_type"] != "client_credentials":
            return aad_error(
                request,
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{fields['grant_type']}'. The sandbox supports "
                "only 'client_credentials'.",
            )
        client_id = fields["client_id"]
        if client_id.lower() != ctx.credentials.client_id:
            return aad_error(
                request,
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        secret = fields.get("client_secret")
        if not secret:
            return aad_error(
                request,
                401,
                "invalid_client",
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' "
                "grant type.",
            )
        if secret != ctx.credentials.client_secret:
            return aad_error(
                request,
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
            )
        if not fields.get("scope"):
            return _missing(request, "scope")
        scopes = fields["scope"].split()
        if len(scopes) != 1 or not scopes[0].endswith(DEFAULT_SCOPE_SUFFIX):
            return aad_error(
                request,
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {fields['scope']} is not valid. Client credential flows must have "
                "a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )
        resource = scopes[0].removesuffix(DEFAULT_SCOPE_SUFFIX)
        if resource not in KNOWN_RESOURCES:
            return aad_error(
                request,
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the tenant named {tenant}. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You might have sent your authentication request to the wrong tenant.",
            )
        access_token, _ = ctx.tokens.issue(audience=resource, tenant_id=tenant_id, app_id=client_id)
        ctx.counters.tokens_issued += 1
        lifetime = ctx.tokens.lifetime
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "access_token": access_token,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    return [
        Route(INSTANCE_DISCOVERY, instance_discovery, methods=["GET"]),
        Route(OPENID_CONFIG, openid_configuration, methods=["GET"]),
        Route(KEYS, keys, methods=["GET"]),
        Route(TOKEN, token, methods=["POST"]),
    ]


def _missing(request: Request, name: str) -> JSONResponse:
    return aad_error(
        request,
        400,
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """``(client_id, client_secret)`` from an ``Authorization: Basic`` header, if any."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password
