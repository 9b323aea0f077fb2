"""Errors raised by the provider: one base, :class:`QuamotionError`, and a subclass per kind.

Typed errors let users write precise Airflow retry policies (retry on :class:`QuamotionRateLimitedError`,
never on :class:`QuamotionAuthError`). Messages name the method, the path, the status and the start
of the body; they never hold a token or a secret (see :func:`redact`).
"""

from __future__ import annotations

import re

from airflow.sdk.exceptions import AirflowException

BODY_EXCERPT_CHARS = 300

_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)(\"?(?:access_token|client_secret|apikey|api_key|password|token)\"?\s*[:=]\s*\"?)[^\"&\s,}]+"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # a JWT anywhere
)


def redact(text: str, *secrets: str | None) -> str:
    """Remove bearer tokens, JWTs, ``key=value`` secrets and the given literal secrets from ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def excerpt(body: str | bytes | None, limit: int = BODY_EXCERPT_CHARS) -> str:
    """The start of a reply body, one line, redacted, for an error message."""
    if body is None:
        return ""
    if isinstance(body, bytes):
        body = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(body.split())
    text = redact(text)
    return text if len(text) <= limit else text[:limit] + "..."


class QuamotionError(AirflowException):
    """Base of every error this provider raises."""


class QuamotionConfigError(QuamotionError):
    """The connection or an argument is missing or malformed; the message says how to fix it."""


class QuamotionInsecureRequestError(QuamotionConfigError):
    """A request was refused before sending: another origin, or plain http to a non-loopback host."""


class QuamotionAuthError(QuamotionError):
    """Authentication failed: Azure AD refused the credentials, the API key login failed, or a 401/403.

    ``transient`` is true when the token service itself was unavailable (5xx, dropped connections
    after every retry): a waiting sensor or trigger may poll again rather than fail.
    """

    def __init__(self, message: str, *, code: str | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


class QuamotionApiError(QuamotionError):
    """The API answered with an error status (after any retries)."""

    def __init__(self, message: str, *, status: int | None = None, method: str = "", url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url


class QuamotionNotFoundError(QuamotionApiError):
    """404, or a record (a test run, a project, an app) that does not exist."""


class QuamotionRateLimitedError(QuamotionApiError):
    """429 after every retry was spent."""


class QuamotionResponseError(QuamotionApiError):
    """A reply that cannot be used: not JSON where JSON was expected, or of an unexpected shape."""


class QuamotionTimeoutError(QuamotionError):
    """A deadline passed while waiting (a sensor's ``timeout`` or a trigger's absolute deadline)."""
