"""A million test runs: generated on the fly, streamed with flat server memory, looked up in O(1)."""

from __future__ import annotations

import itertools
import time
import tracemalloc
from collections.abc import Iterator

import ijson
import psutil
import pytest
import requests

from airflow_provider_quamotion import api as qapi
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.sandbox.data import DataSettings, SandboxData

from .conftest import fetch_token, tls_session

MILLION = 1_000_000
STREAMED_RECORDS = 60_000
#: The server's RSS may grow this much while streaming (it holds one chunk of records at a time).
RSS_GROWTH_LIMIT = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    with Sandbox(tmp_path_factory.mktemp("big"), runs=MILLION, seed=5) as sb:
        yield sb


@pytest.fixture
def big_api(big: Sandbox) -> Iterator[requests.Session]:
    with tls_session(big) as session:
        session.headers["Authorization"] = f"Bearer {fetch_token(big, session)}"
        yield session


def test_generation_memory_is_constant():
    data = SandboxData(DataSettings(runs=MILLION, seed=5))
    tracemalloc.start()
    try:
        for _ in data.iter_runs(range(MILLION - 20_000, MILLION)):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_streamed_list_keeps_server_memory_flat(big: Sandbox, big_api: requests.Session):
    server = psutil.Process(big.pid)
    url = big.project_url + qapi.TEST_RUNS
    before = server.memory_info().rss
    peak = before
    with big_api.get(url, stream=True, timeout=60) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers  # streamed, not built in memory
        response.raw.decode_content = True
        records = ijson.items(response.raw, "item", use_float=True)
        expected = big.expected_test_runs()
        start = time.perf_counter()
        for n, (served, wanted) in enumerate(
            zip(itertools.islice(records, STREAMED_RECORDS), expected, strict=False)
        ):
            assert served == wanted
            if n % 5000 == 0:
                peak = max(peak, server.memory_info().rss)
        elapsed = time.perf_counter() - start
    assert n == STREAMED_RECORDS - 1
    assert peak - before < RSS_GROWTH_LIMIT, f"server RSS grew by {(peak - before) / 2**20:.1f} MiB"
    print(
        f"streamed {STREAMED_RECORDS} runs in {elapsed:.2f}s; server RSS {before / 2**20:.0f}->{peak / 2**20:.0f} MiB"
    )


def test_lookups_by_id_are_direct(big: Sandbox, big_api: requests.Session):
    last = big.data.run(MILLION - 1)
    start = time.perf_counter()
    jobs = big_api.get(big.project_url + qapi.test_run_jobs(last["testRunId"])).json()
    job = big_api.get(big.project_url + qapi.job(jobs[-1]["id"])).json()
    assert time.perf_counter() - start < 1.0
    assert jobs == big.data.jobs(MILLION - 1)
    assert job == jobs[-1]
    assert list(big.expected_test_runs(since=last["scheduled"])) == [last]
