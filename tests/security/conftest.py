"""Helpers of the security tests: a scanner for secrets and tokens, and clean process caches."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import pytest

from airflow_provider_quamotion import auth
from tests.mocks import reset_process_caches

#: Any JWT (every token the sandbox issues is one), whoever issued it.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")


def leaks(text: str | bytes, secrets: Iterable[str]) -> list[str]:
    """What in ``text`` is a secret, a known token or any JWT (shortened, so a failure shows no secret)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    found = [f"secret {s[:4]}...({len(s)} chars)" for s in set(secrets) if s and s in text]
    found += [f"JWT {m.group(0)[:12]}..." for m in JWT.finditer(text)]
    return found


def cached_tokens() -> set[str]:
    """The tokens in this process's cache right now."""
    return {t.value for t in auth.TOKEN_CACHE._tokens.values()}


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    reset_process_caches()
    yield
    reset_process_caches()
