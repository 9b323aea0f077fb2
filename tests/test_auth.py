"""Token sources and the per-process token cache."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from airflow_provider_quamotion.auth import Token, TokenCache, aad_error
from airflow_provider_quamotion.settings import QuamotionSettings


class FakeSource:
    """A token source that counts its fetches and is slow, like a real identity provider."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.fetches = 0
        self.forgotten = 0
        self.lifetime = lifetime
        self._lock = threading.Lock()

    @property
    def key(self) -> tuple[str, ...]:
        return ("fake",)

    def fetch(self) -> Token:
        time.sleep(0.05)
        with self._lock:
            self.fetches += 1
            n = self.fetches
        return Token(f"token-{n}", time.time() + self.lifetime, self.lifetime)

    def forget(self) -> None:
        self.forgotten += 1


def test_one_fetch_for_many_threads() -> None:
    cache, source = TokenCache(), FakeSource()
    with ThreadPoolExecutor(16) as pool:
        tokens = set(pool.map(lambda _: cache.get(source), range(64)))
    assert tokens == {"token-1"}
    assert source.fetches == 1


def test_one_fetch_for_many_coroutines() -> None:
    cache, source = TokenCache(), FakeSource()

    async def main() -> set[str]:
        return set(await asyncio.gather(*(cache.aget(source) for _ in range(200))))

    assert asyncio.run(main()) == {"token-1"}
    assert source.fetches == 1


def test_renewal_near_expiry() -> None:
    assert Token("t", time.time() + 3600, 3600).fresh()
    assert not Token("t", time.time() + 200, 3600).fresh()  # under 5 minutes left
    assert Token("t", time.time() + 3, 4).fresh()  # short-lived: a quarter of its lifetime
    assert not Token("t", time.time() + 0.5, 4).fresh()
    cache, source = TokenCache(), FakeSource(lifetime=0.1)
    assert cache.get(source) == "token-1"
    time.sleep(0.1)  # expired
    assert cache.get(source) == "token-2"


def test_invalidate_drops_only_the_rejected_token() -> None:
    cache, source = TokenCache(), FakeSource()
    first = cache.get(source)
    cache.invalidate(source, first)
    second = cache.get(source)
    assert second != first
    cache.invalidate(source, first)  # a late 401 for the old token keeps the new one
    assert cache.get(source) == second
    assert source.forgotten == 1


def test_aad_error_without_codes_reads_the_description() -> None:
    settings = QuamotionSettings(client_id="cid", client_secret="hunter2-secret", tenant_id="t")
    error = aad_error(
        {"error": "invalid_client", "error_description": "AADSTS7000222: expired hunter2-secret\r\nTrace"},
        settings,
    )
    assert error.code == "AADSTS7000222"
    assert "has expired" in str(error)
    assert "hunter2-secret" not in str(error)
    unknown = aad_error({"error": "weird"}, settings)
    assert unknown.code is None
    assert "Check the connection's client ID" in str(unknown)
