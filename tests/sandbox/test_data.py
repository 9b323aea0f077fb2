"""The generated data: deterministic, windowable, served exactly as ``expected_*`` computes it."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import requests

from airflow_provider_quamotion import api as qapi
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.sandbox.data import JOB_ID_BASE, DataSettings, SandboxData, parse_time

from .conftest import client_credentials, tls_session, token_url

ANCHOR = parse_time("2024-05-01T12:00:00+00:00")


def make(seed: int = 0, runs: int = 300, days: float = 30.0) -> SandboxData:
    return SandboxData(DataSettings(seed=seed, runs=runs, days=days, anchor=ANCHOR))


def test_same_seed_same_records_other_seed_other_records():
    a, b, c = make(0), make(0), make(1)
    assert list(a.iter_runs()) == list(b.iter_runs())
    assert list(a.iter_jobs()) == list(b.iter_jobs())
    assert a.device_groups == b.device_groups and a.schedules == b.schedules
    assert {r["testRunId"] for r in a.iter_runs()}.isdisjoint(r["testRunId"] for r in c.iter_runs())
    assert [r["appId"] for r in a.iter_runs()] != [r["appId"] for r in c.iter_runs()]


def test_record_fields_match_the_api_shape():
    data = make()
    run = data.run(0)
    assert tuple(run) == qapi.TEST_RUN_FIELDS
    job = data.jobs(0)[0]
    assert (qapi.TEST_RUN_ID, *job) == qapi.JOB_FIELDS
    assert run["jobs"] == []
    assert run["operatingSystem"] in (1, 2)


def test_times_span_the_days_before_the_anchor_in_order():
    data = make(runs=1000, days=10)
    stamps = [parse_time(r["scheduled"]) for r in data.iter_runs()]
    assert stamps == sorted(stamps)
    assert ANCHOR - 10 * 86400 <= stamps[0] < ANCHOR - 9.9 * 86400
    assert ANCHOR - 0.1 * 86400 < stamps[-1] < ANCHOR
    # the captured list omits the offset on every run
    assert not [r for r in data.iter_runs() if "+" in r["scheduled"] or r["scheduled"].endswith("Z")]


def test_null_fields_and_retried_attempts_as_captured():
    data = make(runs=200)
    runs = list(data.iter_runs())
    assert all(r["branch"] is None for r in runs)
    null_os = [i for i, r in enumerate(runs) if r["operatingSystem"] is None]
    assert null_os == list(range(10, 200, 11))
    assert {r["operatingSystem"] for r in runs} == {None, 1, 2}
    retried = [i for i in range(200) if len({j["name"] for j in data.jobs(i)}) < len(data.jobs(i))]
    assert retried == list(range(12, 200, 13))
    for i in retried:
        jobs = data.jobs(i)
        first, rerun = jobs[0], jobs[-1]
        assert first["name"] == rerun["name"]
        assert (first["status"], rerun["status"]) == ("canceled", "success")
        assert parse_time(rerun["started"]) > parse_time(first["started"]) and rerun["id"] > first["id"]
        assert data.job(rerun["id"]) is not None and data.job(rerun["id"])[0] == rerun
        assert [j for j in qapi.latest_attempts(jobs) if j["name"] == first["name"]] == [rerun]
    assert data.job(JOB_ID_BASE + 11 * 10 + 5) is None  # no re-run slot in a run without a retry


def test_job_ids_fit_in_32_bits():
    from airflow_provider_quamotion.sandbox.data import MAX_RUNS
    from airflow_provider_quamotion.sandbox.store import CREATED_JOB_ID_BASE

    data = make(runs=MAX_RUNS)
    last = data.jobs(MAX_RUNS - 1)
    assert max(j["id"] for j in last) < CREATED_JOB_ID_BASE
    assert CREATED_JOB_ID_BASE + 10_000_000 * 10 < 2**31
    with pytest.raises(ValueError, match="32 bits"):
        make(runs=MAX_RUNS + 1)


def test_jobs_statuses_and_ids():
    data = make(runs=2000)
    jobs_per_run = [len(data.jobs(i)) for i in range(2000)]
    assert set(jobs_per_run) <= {1, 2, 3, 4, 5}  # 5: four devices and a re-run
    assert len(set(jobs_per_run)) > 1
    statuses = Counter(job["status"] for _, job in data.iter_jobs())
    assert set(statuses) == {"success", "failed", "canceled", "skipped"}
    assert statuses["success"] > sum(statuses.values()) * 0.7
    for i in (0, 1234, 1999):
        for k, job in enumerate(data.jobs(i)):
            rerun = k == len(data.jobs(i)) - 1 and i % 13 == 12
            assert job["id"] == JOB_ID_BASE + i * 10 + (5 if rerun else k)
            assert all(qapi.JobStatus.parse(job["status"]).is_terminal for job in data.jobs(i))
            found = data.job(job["id"])
            assert found is not None and found[0] == job and found[1] == data.run(i)
    assert data.job(JOB_ID_BASE + 1999 * 10 + 9) is None
    assert data.job(JOB_ID_BASE + 2000 * 10) is None
    assert data.job(JOB_ID_BASE - 1) is None


def test_run_ids_encode_the_index():
    data, other = make(runs=500), make(seed=7, runs=500)
    assert data.run_index(data.run_id(499)) == 499
    assert data.run_index(data.run_id(500)) is None  # beyond runs
    assert data.run_index(other.run_id(3)) is None  # another seed's id
    assert data.run_index("not-an-id") is None


@pytest.mark.parametrize("seed", [0, 3])
def test_index_range_equals_filtering(seed: int):
    data = make(seed=seed, runs=700, days=7)
    stamps = [parse_time(r["scheduled"]) for r in data.iter_runs()]
    day = 86400
    for since, until in [
        (ANCHOR - 3 * day, ANCHOR - 2 * day),
        (None, ANCHOR - 6 * day),
        (ANCHOR - day / 3, None),
        (ANCHOR + day, None),
        (stamps[10], stamps[20]),
    ]:
        expected = [
            i for i, t in enumerate(stamps) if (since is None or t >= since) and (until is None or t < until)
        ]
        assert list(data.index_range(since, until)) == expected


def test_yesterday_has_rows(sandbox: Sandbox):
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = list(sandbox.expected_test_runs(today - dt.timedelta(days=1), today))
    assert len(yesterday) >= 5
    assert all(r["scheduled"][:10] == (today - dt.timedelta(days=1)).strftime("%Y-%m-%d") for r in yesterday)


def test_served_records_equal_expected(sandbox_faultfree: Sandbox, api: requests.Session, project_url: str):
    sb = sandbox_faultfree
    served = api.get(project_url + qapi.TEST_RUNS).json()
    expected = list(sb.expected_test_runs())
    assert len(expected) == 300
    assert served[-300:] == expected  # newest first: runs created by other tests come before
    jobs = list(sb.expected_jobs(run_id_key=qapi.TEST_RUN_ID))
    for run in expected[::37]:
        served_jobs = api.get(project_url + qapi.test_run_jobs(run["testRunId"])).json()
        assert served_jobs == [
            {k: v for k, v in j.items() if k != qapi.TEST_RUN_ID}
            for j in jobs
            if j[qapi.TEST_RUN_ID] == run["testRunId"]
        ]
        assert api.get(project_url + qapi.job(served_jobs[-1]["id"])).json() == served_jobs[-1]
    assert len(jobs) == sum(1 for _ in sb.expected_jobs())


def test_windowed_expectations(sandbox: Sandbox):
    runs = list(sandbox.expected_test_runs())[::-1]  # served newest first
    since, until = runs[100]["scheduled"], runs[200]["scheduled"]
    window = list(sandbox.expected_test_runs(since, until))
    assert window[-1] == runs[100]
    assert window[0]["testRunId"] != runs[200]["testRunId"]
    assert all(parse_time(since) <= parse_time(r["scheduled"]) < parse_time(until) for r in window)
    assert len(window) <= 100


def test_projects_option(tmp_path):
    with Sandbox(tmp_path, runs=3, projects=3, in_process=True) as sb, tls_session(sb) as session:
        token = session.post(token_url(sb), data=client_credentials(sb)).json()["access_token"]
        session.headers["Authorization"] = f"Bearer {token}"
        projects = session.get(sb.api_url + qapi.PROJECTS).json()
        assert len(projects) == 3
        assert len({p["relativeUrl"] for p in projects}) == 3
        for project in projects:
            runs = session.get(f"{sb.api_url}{project['relativeUrl']}api/{qapi.TEST_RUNS}").json()
            assert runs == list(sb.expected_test_runs())
