"""Access tokens: HS256 JWTs signed with the state dir's key, issued by the AD emulator and by API login."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from airflow_provider_quamotion.api import DEFAULT_RESOURCE

#: Claim carrying the revocation generation a token was issued in.
REVOCATION_CLAIM = "xms_sbx_gen"
_CACHE_LIMIT = 4096


class InvalidToken(Exception):
    """A bearer token the API rejects; the message is the ``error_description``."""


class TokenService:
    """Issues and verifies the sandbox's access tokens.

    :param signing_key: the HS256 key.
    :param lifetime: lifetime in seconds of tokens issued from now on.
    """

    def __init__(self, signing_key: str, lifetime: int) -> None:
        self._key = signing_key
        self.lifetime = lifetime
        self.generation = 0
        self._cache: dict[str, dict[str, Any]] = {}

    def issue(self, *, audience: str, tenant_id: str, app_id: str) -> tuple[str, dict[str, Any]]:
        """A new token and its claims.

        :param audience: the ``aud`` claim (the requested resource, as requested).
        :param tenant_id: the ``tid`` claim.
        :param app_id: the ``appid`` claim (the client id, or ``api-key`` for API key logins).
        """
        now = int(time.time())
        claims = {
            "aud": audience,
            "iss": f"https://sts.windows.net/{tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "tid": tenant_id,
            "appid": app_id,
            "appidacr": "1",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{app_id}")),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{app_id}")),
            "ver": "1.0",
            "jti": str(uuid.uuid4()),
            REVOCATION_CLAIM: self.generation,
        }
        return jwt.encode(claims, self._key, algorithm="HS256"), claims

    def revoke_all(self) -> None:
        """Revoke every token issued so far."""
        self.generation += 1
        self._cache.clear()

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token the API accepts.

        :param token: the bearer token.
        :raises InvalidToken: the token is malformed, badly signed, expired, revoked or for another audience.
        """
        claims = self._cache.get(token)
        if claims is None:
            try:
                claims = jwt.decode(
                    token,
                    self._key,
                    algorithms=["HS256"],
                    options={
                        "verify_aud": False,
                        "verify_exp": False,
                        "verify_nbf": False,
                        "verify_iat": False,
                    },
                )
            except jwt.InvalidTokenError as exc:
                raise InvalidToken(f"The token is not valid: {exc}") from None
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = claims
        now = time.time()
        if claims.get(REVOCATION_CLAIM) != self.generation:
            raise InvalidToken("The token has been revoked")
        if not isinstance(claims.get("exp"), int) or now >= claims["exp"]:
            raise InvalidToken(f"The token is expired (exp {claims.get('exp')}, now {int(now)})")
        if isinstance(claims.get("nbf"), int) and now < claims["nbf"]:
            raise InvalidToken("The token is not yet valid")
        if claims.get("aud") != DEFAULT_RESOURCE:
            raise InvalidToken(
                f"The audience '{claims.get('aud')}' is invalid; expected '{DEFAULT_RESOURCE}' "
                "(request the scope with two slashes: 'https://cloud.quamotion.mobi//.default')"
            )
        return claims
