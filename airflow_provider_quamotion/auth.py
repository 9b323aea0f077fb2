"""Token sources and the per-process token cache.

Two sources: Azure AD client credentials through MSAL (:class:`MsalClientCredentials`, the vendor's
way) and Quamotion's API key login (:class:`ApiKeyLogin`, ``POST /api/login``). Both hand tokens to
one process-wide :class:`TokenCache`, keyed by the credentials, so every hook, task thread and
trigger of a process that uses the same connection shares one token until it nears expiry.

msal is imported, and its application built, on the first token request only: never at import time
or in a hook's ``__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionAuthError,
    QuamotionConfigError,
    QuamotionError,
    QuamotionInsecureRequestError,
    redact,
    register_secret,
)
from airflow_provider_quamotion.settings import QuamotionSettings
from airflow_provider_quamotion.transport.policy import origin_of

log = logging.getLogger(__name__)

#: Renew a token when less than this many seconds (or a quarter of its lifetime) remain.
REFRESH_MARGIN_SECONDS = 300.0

#: What to do about an Azure AD error code. The message always names the code.
AADSTS_FIXES: dict[int, str] = {
    7000215: "The client secret is wrong. Set the connection's password to a current secret of the "
    "Azure AD application (Certificates & secrets).",
    7000222: "The client secret has expired. Create a new one and set it as the connection's password.",
    700016: "Azure AD does not know this client ID in this tenant. Check the connection's login (the "
    "application (client) ID) and tenant_id.",
    90002: "Azure AD does not know this tenant. Set tenant_id in the extra to your tenant's GUID or "
    "domain (e.g. contoso.onmicrosoft.com).",
    50059: "Azure AD could not tell which tenant to use. Set tenant_id in the extra to your tenant's "
    "GUID or domain instead of 'common'.",
    900023: "The tenant identifier is not valid. Set tenant_id in the extra to your tenant's GUID or domain.",
    90013: "The tenant identifier is not valid. Set tenant_id in the extra to your tenant's GUID or domain.",
    500011: "The resource was not found in the tenant. Set resource to https://cloud.quamotion.mobi/ "
    "(with the trailing slash) and make sure the application may call it.",
    1002012: "The scope is malformed. Set resource to https://cloud.quamotion.mobi/ (the provider adds "
    "'/.default').",
    700024: "The client assertion is not valid. Check the client ID and secret.",
}


@dataclass(frozen=True)
class Token:
    """A bearer token and when it stops being usable (``time.time()`` seconds)."""

    value: str
    expires_at: float
    lifetime: float

    def fresh(self, now: float | None = None) -> bool:
        """Whether the token is far enough from expiry to use."""
        margin = min(REFRESH_MARGIN_SECONDS, self.lifetime / 4)
        return self.expires_at - (time.time() if now is None else now) > margin


class TokenSource(Protocol):
    """Something that obtains tokens over the network."""

    @property
    def key(self) -> tuple[str, ...]:
        """Identifies the credentials (secrets hashed), so equal credentials share a cached token."""
        ...

    def fetch(self) -> Token:
        """Obtain a new token (blocking)."""
        ...

    def forget(self) -> None:
        """Drop anything cached below this source (msal's own cache)."""
        ...


class TokenCache:
    """Process-wide tokens by credentials. Thread-safe; one fetch at a time per credentials."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._stale: set[tuple[str, ...]] = set()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._guard = threading.Lock()
        self.fetches = 0

    def _lock(self, key: tuple[str, ...]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def peek(self, source: TokenSource) -> str | None:
        """The cached token if it is fresh; never blocks on the network."""
        token = self._tokens.get(source.key)
        return token.value if token is not None and token.fresh() else None

    def get(self, source: TokenSource) -> str:
        """A fresh token: the cached one, or one fetched now (once, whatever the number of threads)."""
        cached = self.peek(source)
        if cached is not None:
            return cached
        with self._lock(source.key):
            cached = self.peek(source)
            if cached is not None:
                return cached
            with self._guard:
                stale = source.key in self._stale
                self._stale.discard(source.key)
            if stale:
                source.forget()  # here, in the fetching thread: never on an event loop
            token = source.fetch()
            self.fetches += 1
            register_secret(token.value)
            self._tokens[source.key] = token
            return token.value

    async def aget(self, source: TokenSource) -> str:
        """Like :meth:`get`, without blocking the event loop (a fetch runs in a worker thread)."""
        cached = self.peek(source)
        if cached is not None:
            return cached
        return await asyncio.to_thread(self.get, source)

    def invalidate(self, source: TokenSource, token: str) -> None:
        """Drop ``token`` if it is still the cached one (many callers may report the same 401).

        Never waits for a fetch in flight (it takes only the short dictionary guard, not the
        per-credentials fetch lock), so an event loop may call it while Azure AD is slow; what lies
        cached below the source (msal's own cache) is dropped by the next fetch.
        """
        with self._guard:
            current = self._tokens.get(source.key)
            if current is not None and current.value == token:
                del self._tokens[source.key]
                self._stale.add(source.key)

    def clear(self) -> None:
        """Forget every token (tests)."""
        with self._guard:
            self._tokens.clear()
            self._stale.clear()


#: The process-wide cache.
TOKEN_CACHE = TokenCache()


def aad_error(result: Mapping[str, Any], settings: QuamotionSettings) -> QuamotionAuthError:
    """A clear error for an Azure AD error reply (as msal returns it): the AADSTS code and the fix."""
    codes = [int(c) for c in result.get("error_codes") or [] if str(c).isdigit()]
    description = str(result.get("error_description") or "")
    if not codes and description.startswith("AADSTS"):
        digits = description[6:].split(":", 1)[0]
        codes = [int(digits)] if digits.isdigit() else []
    code = codes[0] if codes else None
    first_line = redact(
        description.splitlines()[0] if description else str(result.get("error")), *settings.secrets()
    )
    fix = AADSTS_FIXES.get(code or -1, "Check the connection's client ID, secret, tenant_id and resource.")
    correlation = result.get("correlation_id")
    return QuamotionAuthError(
        f"Azure AD refused the token request for client {settings.client_id!r} in tenant "
        f"{settings.tenant_id!r} ({result.get('error')}: {first_line}). {fix}"
        + (f" Correlation ID: {correlation}." if correlation else ""),
        code=f"AADSTS{code}" if code else None,
    )


class MsalClientCredentials:
    """Azure AD client credentials through an MSAL confidential client (one per credentials, per process).

    :param settings: the connection's settings (client ID and secret, tenant, authority host, resource).
    """

    _apps: dict[tuple[str, ...], Any] = {}
    _apps_lock = threading.Lock()

    def __init__(self, settings: QuamotionSettings) -> None:
        if not (settings.client_id and settings.client_secret):
            raise QuamotionConfigError(
                "Client credentials need both a client ID (login) and a secret (password)."
            )
        self.settings = settings

    @property
    def key(self) -> tuple[str, ...]:
        """The credentials' identity (the secret hashed)."""
        return ("msal", *self.settings.identity())

    def _app(self) -> Any:
        with self._apps_lock:
            app = self._apps.get(self.key)
            if app is None:
                app = self._build()
                self._apps[self.key] = app
            return app

    def _build(self) -> Any:
        import msal

        from airflow_provider_quamotion.transport.sync import QuamotionSession

        s = self.settings
        http = QuamotionSession(
            s,
            origin=origin_of(s.authority_host),
            raise_for_status=False,
            pool_size=4,
            safe_to_repeat=True,
            follow_redirects=False,
        )
        try:
            return msal.ConfidentialClientApplication(
                s.client_id,
                client_credential=s.client_secret,
                authority=s.authority,
                http_client=http,
                timeout=s.timeout,
                instance_discovery=False,
                validate_authority=False,
            )
        except ValueError:
            raise QuamotionAuthError(
                f"Azure AD does not know the tenant {s.tenant_id!r} at {s.authority_host} (its OpenID "
                "configuration could not be loaded; Azure AD calls this AADSTS90002). Check tenant_id "
                "(a GUID or a domain such as contoso.onmicrosoft.com) and authority_host.",
                code="AADSTS90002",
            ) from None

    def fetch(self) -> Token:
        """Ask Azure AD (or msal's cache, when still fresh) for a token."""
        import requests

        try:
            result = self._app().acquire_token_for_client(scopes=[self.settings.scope])
        except requests.RequestException as err:
            raise QuamotionAuthError(
                f"Could not reach Azure AD at {self.settings.authority_host}: {type(err).__name__}. "
                "Check authority_host, proxies and verify in the connection.",
                transient=True,
            ) from None
        except QuamotionAuthError:
            raise
        except QuamotionInsecureRequestError as err:
            raise QuamotionAuthError(f"Azure AD token request refused: {err}") from None
        except QuamotionError as err:
            status = getattr(err, "status", None)
            unavailable = (status is None or status == 429 or status >= 500) and "certificate" not in str(err)
            raise QuamotionAuthError(
                f"Could not get a token from Azure AD: {err}", transient=unavailable
            ) from None
        except (
            Exception
        ) as err:  # msal raises MsalServiceError (5xx after retries) and ValueError for bad replies
            raise QuamotionAuthError(
                f"Azure AD token request failed: {type(err).__name__}: {redact(str(err), *self.settings.secrets())[:300]}",
                transient=type(err).__name__ == "MsalServiceError",
            ) from None
        if "access_token" not in result:
            raise aad_error(result, self.settings)
        lifetime = float(result.get("expires_in") or 3600)
        return Token(result["access_token"], time.time() + lifetime, lifetime)

    def forget(self) -> None:
        """Remove msal's cached token so the next fetch asks Azure AD."""
        app = self._apps.get(self.key)
        if app is not None:
            app.remove_tokens_for_client()


class ApiKeyLogin:
    """Quamotion's API key login: ``POST /api/login`` with the form field ``apiKey``.

    :param settings: the connection's settings (base URL and API key).
    """

    def __init__(self, settings: QuamotionSettings) -> None:
        if not settings.api_key:
            raise QuamotionConfigError("API key login needs api_key in the connection's extra.")
        self.settings = settings

    @property
    def key(self) -> tuple[str, ...]:
        """The credentials' identity (the key hashed)."""
        return ("apikey", *self.settings.identity())

    def fetch(self) -> Token:
        """Log in and return the token document's ``access_token``."""
        from airflow_provider_quamotion.transport.jsonio import parse_json
        from airflow_provider_quamotion.transport.sync import QuamotionSession

        with QuamotionSession(
            self.settings, pool_size=1, safe_to_repeat=True, follow_redirects=False
        ) as http:
            try:
                response = http.post(api.LOGIN, data={api.LOGIN_API_KEY_FIELD: self.settings.api_key})
            except QuamotionAuthError:
                raise QuamotionAuthError(
                    "Quamotion refused the API key (POST /api/login answered 401/403). Set a valid api_key "
                    "in the connection's extra, or use client credentials instead."
                ) from None
            except QuamotionInsecureRequestError as err:
                raise QuamotionAuthError(f"The API key login was refused: {err}") from None
            except QuamotionError as err:
                raise QuamotionAuthError(
                    f"The API key login failed: {err}",
                    transient=getattr(err, "status", None) in (None, 429)
                    or (getattr(err, "status", 0) or 0) >= 500,
                ) from None
            try:
                document = parse_json(response)
            except QuamotionError as err:
                raise QuamotionAuthError(f"The API key login failed: {err}") from None
        token = document.get("access_token") if isinstance(document, Mapping) else None
        if not token:
            raise QuamotionAuthError(
                "POST /api/login answered without an access_token; the API key login failed."
            )
        lifetime = float(document.get("expires_in") or 3600)
        return Token(str(token), time.time() + lifetime, lifetime)

    def forget(self) -> None:
        """Nothing is cached below this source."""


class CachedTokenProvider:
    """A :class:`~airflow_provider_quamotion.transport.TokenProvider` over a source and the process cache.

    :param source: where tokens come from.
    :param cache: the cache (the process-wide one unless a test says otherwise).
    """

    def __init__(self, source: TokenSource, cache: TokenCache = TOKEN_CACHE) -> None:
        self.source = source
        self.cache = cache

    def get_token(self) -> str:
        """A fresh token (blocking)."""
        return self.cache.get(self.source)

    async def aget_token(self) -> str:
        """A fresh token without blocking the event loop."""
        return await self.cache.aget(self.source)

    def invalidate(self, token: str) -> None:
        """Drop a token the API rejected."""
        self.cache.invalidate(self.source, token)


def token_provider(settings: QuamotionSettings) -> CachedTokenProvider:
    """The token provider the settings call for: API key login, or Azure AD client credentials."""
    source: TokenSource = ApiKeyLogin(settings) if settings.uses_api_key else MsalClientCredentials(settings)
    return CachedTokenProvider(source)
