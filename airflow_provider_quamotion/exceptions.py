"""Errors raised by the provider: one base, :class:`QuamotionError`, and a subclass per kind.

Typed errors let users write precise Airflow retry policies (retry on :class:`QuamotionRateLimitedError`,
never on :class:`QuamotionAuthError`). Messages name the method, the path, the status and the start
of the body; they never hold a token or a secret (see :func:`redact`).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from functools import cache
from urllib.parse import quote, quote_plus

from airflow_provider_quamotion.compat import AirflowException

BODY_EXCERPT_CHARS = 300
#: A secret shorter than this is not registered (it would blank out ordinary words); no real client
#: secret, API key, token or proxy password is that short.
MIN_SECRET_CHARS = 8
#: Tokens and secrets remembered by the redactor (oldest forgotten first: a token hours past expiry).
MAX_SECRETS = 4096
#: Loggers whose records pass the redactor: ours and the libraries our requests go through.
REDACTED_LOGGERS = (
    "airflow_provider_quamotion",
    "msal",
    "urllib3",
    "requests",
    "aiohttp",
    "httpx",
    "httpcore",
)


@cache
def _secret_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """Secrets recognised by their shape, with what replaces them (compiled on first use, not at DAG
    parse time: this module is imported by every operator)."""
    return (
        (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1***"),
        (
            re.compile(
                r"(?i)(\"?(?:access_token|refresh_token|id_token|client_secret|client_assertion|apikey|api_key"
                r"|password|token)\"?\s*[:=]\s*\"?)[^\"&\s,}]+"
            ),
            r"\1***",
        ),
        (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***"),  # a JWT anywhere
        (re.compile(r"(?i)(://[^/\s:@]*:)[^/\s@]+(@)"), r"\1***\2"),  # the password of user:password@host
    )


_SECRETS: OrderedDict[str, None] = OrderedDict()
_SECRETS_LOCK = threading.Lock()
_installed = False


def register_secret(value: str | None) -> None:
    """Teach the process's redactor a live secret (client secret, API key, token, proxy password).

    The value is remembered with the forms it takes on the wire (form- and URL-encoded, JSON-escaped),
    so it is removed from every message, exception, ``repr`` and log record of the loggers in
    :data:`REDACTED_LOGGERS`, whatever shape it has (a JWT or not). It is also handed to Airflow's
    own masker (``mask_secret``) for the task logs.

    :param value: the secret; ``None`` or one shorter than :data:`MIN_SECRET_CHARS` is ignored.
    """
    if not value or len(value) < MIN_SECRET_CHARS:
        return
    if value in _SECRETS:
        return
    forms = {value, quote_plus(value), quote(value, safe=""), json.dumps(value)[1:-1]}
    with _SECRETS_LOCK:
        for form in forms:
            _SECRETS[form] = None
            _SECRETS.move_to_end(form)
        while len(_SECRETS) > MAX_SECRETS:
            _SECRETS.popitem(last=False)
    _install_log_redaction()
    from airflow_provider_quamotion.compat import mask_secret

    mask_secret(value)


def redact(text: str, *secrets: str | None) -> str:
    """Remove every live secret (see :func:`register_secret`), the given ones, bearer tokens, JWTs,
    ``key=value`` secrets and URL passwords from ``text``."""
    text = str(text)
    with _SECRETS_LOCK:
        known = [s for s in _SECRETS if s in text]
    extra = [s for s in secrets if s and s in text]
    for secret in sorted({*known, *extra}, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern, replacement in _secret_patterns():
        text = pattern.sub(replacement, text)
    return text


def _install_log_redaction() -> None:
    """Redact the records of :data:`REDACTED_LOGGERS` as they are made (a log record factory, so
    records of child loggers and of libraries are covered whatever handler formats them)."""
    global _installed
    if _installed:
        return
    with _SECRETS_LOCK:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if isinstance(record.name, str) and record.name.startswith(REDACTED_LOGGERS):
                try:
                    message = record.getMessage()
                except Exception:
                    return record
                cleaned = redact(message)
                if cleaned != message:
                    record.msg, record.args = cleaned, ()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


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
    """Base of every error this provider raises. Its message passes the redactor when it is made and
    again whenever it is shown, so a secret learnt in between is removed too."""

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(redact(str(message)), *args)

    def __str__(self) -> str:
        return redact(super().__str__())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


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
