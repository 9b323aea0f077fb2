"""Fault injection and counters, through real TLS (admin API and Python API)."""

from __future__ import annotations

import os
import time

import pytest
import requests

from airflow_provider_quamotion.api import VERSION
from airflow_provider_quamotion.sandbox import FaultConfig, FaultRule, Sandbox
from airflow_provider_quamotion.sandbox.faults import FaultInjector

from .conftest import client_credentials, tls_session, token_url

#: Event-loop timers may fire a little early (millisecond resolution).
TIMER_SLACK = 0.95


def statuses(api: requests.Session, url: str, n: int) -> list[int | str]:
    out: list[int | str] = []
    for _ in range(n):
        try:
            out.append(api.get(url, timeout=10).status_code)
        except requests.ConnectionError:
            out.append("drop")
    return out


def test_sequence_then_normal(sandbox_faultfree: Sandbox, api: requests.Session):
    sb = sandbox_faultfree
    sb.set_faults(path="^/api/version$", sequence=[429, 503, "ok", 500, "drop"], retry_after=2)
    sb.reset_counters()
    assert statuses(api, sb.api_url + VERSION, 7) == [429, 503, 200, 500, "drop", 200, 200]
    counters = sb.counters()
    assert counters["faults_injected"] == 4
    assert counters["status"] == {"429": 1, "503": 1, "500": 1, "drop": 1, "200": 3}
    assert counters["by_path"] == {VERSION: 7}


def test_retry_after_and_error_body(sandbox_faultfree: Sandbox, api: requests.Session):
    sb = sandbox_faultfree
    sb.set_faults(status=429, retry_after=3)
    response = api.get(sb.api_url + VERSION)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert response.json()["error"] == "sandbox_fault"
    sb.set_faults(status=503, retry_after=1)
    assert api.get(sb.api_url + VERSION).headers["Retry-After"] == "1"
    sb.set_faults(status=500)
    assert "Retry-After" not in api.get(sb.api_url + VERSION).headers


def test_drop_is_a_connection_error(sandbox_faultfree: Sandbox, api: requests.Session):
    sb = sandbox_faultfree
    sb.set_faults(status="drop")
    with pytest.raises(requests.ConnectionError):
        api.get(sb.api_url + VERSION, timeout=10)
    sb.clear_faults()
    assert api.get(sb.api_url + VERSION).status_code == 200  # the session recovers with a new connection


def test_rate_is_seeded_and_roughly_honoured(sandbox_faultfree: Sandbox, api: requests.Session):
    sb = sandbox_faultfree
    rule = {"path": "version", "status": [429, 503], "rate": 0.5}
    sb.set_faults({"rules": [rule]})
    first = statuses(api, sb.api_url + VERSION, 40)
    sb.set_faults({"rules": [rule]})  # a new configuration reseeds: same pattern again
    assert statuses(api, sb.api_url + VERSION, 40) == first
    faults = [s for s in first if s != 200]
    assert 8 <= len(faults) <= 32
    assert set(faults) == {429, 503}
    local = FaultInjector(seed=0)
    local.configure(FaultConfig.from_dict({"rules": [rule]}))
    predicted = [(d.action if (d := local.decide(VERSION)) else None) or 200 for _ in range(40)]
    assert predicted == first


def test_path_regex_limits_the_rule(sandbox_faultfree: Sandbox, api: requests.Session, project_url: str):
    sb = sandbox_faultfree
    sb.set_faults(path=r"/testRun$", status=502)
    assert api.get(project_url + "testRun").status_code == 502
    assert api.get(sb.api_url + VERSION).status_code == 200


def test_faults_also_hit_the_token_endpoint(sandbox_faultfree: Sandbox, http: requests.Session):
    sb = sandbox_faultfree
    sb.set_faults(path="/oauth2/v2.0/token$", sequence=[503])
    assert http.post(token_url(sb), data=client_credentials(sb)).status_code == 503
    assert http.post(token_url(sb), data=client_credentials(sb)).status_code == 200


def test_latency_and_slow_body(sandbox_faultfree: Sandbox, api: requests.Session):
    sb = sandbox_faultfree
    url = sb.api_url + VERSION
    api.get(url)  # warm the connection
    start = time.perf_counter()
    api.get(url)
    baseline = time.perf_counter() - start
    sb.set_faults(latency_ms=300)
    start = time.perf_counter()
    assert api.get(url).status_code == 200
    assert time.perf_counter() - start >= 0.3 * TIMER_SLACK
    sb.set_faults(slow_body_ms=400)
    start = time.perf_counter()
    response = api.get(url)
    assert response.json()["sandbox"] is True
    assert time.perf_counter() - start >= 0.4 * TIMER_SLACK > baseline


def test_admin_paths_are_never_faulted_nor_counted(sandbox_faultfree: Sandbox):
    sb = sandbox_faultfree
    sb.set_faults(status="drop")
    for _ in range(3):
        assert sb.counters()["requests"] == 0  # would raise if the admin API were dropped
    assert sb.info()["seed"] == 0


def test_invalid_fault_config_is_400(sandbox_faultfree: Sandbox, http: requests.Session):
    url = sandbox_faultfree.api_url + "/_sandbox/faults"
    for body in (
        {"rules": [{"status": 302}]},
        {"rules": [{"rate": 2, "status": 500}]},
        {"rules": [{"bogus": 1}]},
        {"rules": [], "token_lifetime": 0},
        {"rules": [{"path": "(", "status": 500}]},
    ):
        response = http.post(url, json=body)
        assert response.status_code == 400, body
    assert http.get(url).json() == {"rules": [], "token_lifetime": None}


def test_faults_given_at_start(tmp_path):
    rules = [FaultRule(path="version", sequence=[503])]
    with Sandbox(tmp_path, runs=5, faults=rules, in_process=True) as sb, tls_session(sb) as session:
        token = session.post(token_url(sb), data=client_credentials(sb)).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        assert [session.get(sb.api_url + VERSION).status_code for _ in range(2)] == [503, 200]
        assert sb.pid == os.getpid()


def test_counters_reset(sandbox_faultfree: Sandbox, api: requests.Session, project_url: str):
    sb = sandbox_faultfree
    api.get(sb.api_url + VERSION)
    api.get(project_url + "deviceGroup")
    counters = sb.counters()
    assert counters["requests"] == 3  # the token request of the `api` fixture, then these two
    assert counters["tokens_issued"] == 1
    assert counters["status"] == {"200": 3}
    sb.reset_counters()
    assert sb.counters() == {
        "requests": 0,
        "by_path": {},
        "status": {},
        "tokens_issued": 0,
        "logins": 0,
        "faults_injected": 0,
    }
