"""The sandbox's Quamotion Cloud endpoints, through real TLS."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
import requests

from airflow_provider_quamotion import api as qapi
from airflow_provider_quamotion.sandbox import Sandbox


def test_version(sandbox_faultfree: Sandbox, api: requests.Session):
    body = api.get(sandbox_faultfree.api_url + "/api/version").json()
    assert body["sandbox"] is True
    assert isinstance(body["version"], str)


def test_one_project_with_a_relative_url(sandbox_faultfree: Sandbox, api: requests.Session):
    projects = api.get(sandbox_faultfree.api_url + qapi.PROJECTS).json()
    assert len(projects) == 1
    project = projects[0]
    assert project[qapi.PROJECT_RELATIVE_URL] == f"/project/{project[qapi.PROJECT_NAME]}/"
    assert {"tenantId", "gitLabId", "flags"} <= set(project)
    assert sandbox_faultfree.project_url == f"{sandbox_faultfree.api_url}{project['relativeUrl']}api/"


def test_unknown_paths_and_projects_are_404_json(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    for url in (
        sandbox_faultfree.api_url + "/api/nothing",
        sandbox_faultfree.api_url + "/project/nope/api/testRun",
        project_url + "nothing",
        project_url + qapi.test_run_jobs("00000000-0000-0000-0000-000000000000"),
        project_url + qapi.job(1),
        project_url + qapi.job("not-a-number"),
        project_url + qapi.job_log(1),
    ):
        response = api.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"] == "not_found", url


def test_catalog(api: requests.Session, project_url: str):
    apps = api.get(project_url + qapi.APPLICATIONS).json()
    assert {a["operatingSystem"] for a in apps} == {"Android", "iOS"}
    assert all({"appId", "version", "versionDisplayName", "displayName", "cpuType"} <= set(a) for a in apps)
    packages = api.get(project_url + qapi.TEST_PACKAGES).json()
    assert all(p["testPackageType"] in ("Pester", "PowerShellScript") for p in packages)
    groups = api.get(project_url + qapi.DEVICE_GROUPS).json()
    assert all(1 <= len(g["devices"]) <= 4 for g in groups)
    assert all("deviceSelectionId" in d for g in groups for d in g["devices"])
    schedules = api.get(project_url + qapi.SCHEDULES).json()
    assert schedules
    assert {"id", "cron", "cron_timezone", "next_run_at", "active", "last_pipeline", "owner"} <= set(
        schedules[0]
    )


def test_upload_app_and_test_package(api: requests.Session, project_url: str):
    field = qapi.UPLOAD_FILE_FIELD
    response = api.post(project_url + qapi.APPLICATIONS, files={field: ("Checkout-4.1.2.ipa", b"PK\x03\x04")})
    assert response.status_code == 200
    (app,) = response.json()
    assert app["operatingSystem"] == "iOS"
    assert app["versionDisplayName"] == "4.1.2"
    assert app in api.get(project_url + qapi.APPLICATIONS).json()

    response = api.post(project_url + qapi.TEST_PACKAGES, files={field: ("checkout-tests-2.0.zip", b"zip")})
    (package,) = response.json()
    assert (package["name"], package["version"]) == ("checkout-tests.zip", "2.0")  # keeps the extension
    assert package in api.get(project_url + qapi.TEST_PACKAGES).json()

    bad = api.post(project_url + qapi.APPLICATIONS, files={field: ("notes.txt", b"x")})
    assert bad.status_code == 400
    missing = api.post(project_url + qapi.APPLICATIONS, files={"other": ("a.apk", b"x")})
    assert missing.status_code == 400


def test_schedule_delete(api: requests.Session, project_url: str):
    schedule_id = api.get(project_url + qapi.SCHEDULES).json()[-1]["id"]
    assert api.delete(project_url + qapi.schedule(schedule_id)).status_code == 204
    assert schedule_id not in [s["id"] for s in api.get(project_url + qapi.SCHEDULES).json()]
    assert api.delete(project_url + qapi.schedule(schedule_id)).status_code == 404
    assert api.delete(project_url + qapi.schedule(424242)).status_code == 404


# --- test runs ---------------------------------------------------------------------------------------


def run_request(sb: Sandbox, params: str = "") -> dict:
    app = sb.data.applications[0]
    group = next(g for g in sb.data.device_groups if g.operating_system == app["operatingSystem"])
    package = sb.data.test_packages[0]
    return {
        "app": {"appId": app["appId"], "version": app["version"], "operatingSystem": app["operatingSystem"]},
        "testPackage": {"name": package["name"], "version": package["version"]},
        "deviceGroupId": group.record["deviceGroupId"],
        "schedule": "",
        "testScriptParameters": params,
        "testScriptEnvironmentVariables": {},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"app": {"appId": "no.such.app", "version": "1"}}, "no.such.app"),
        ({"testPackage": {"name": "nope", "version": "1"}}, "test package 'nope'"),
        ({"deviceGroupId": "no-such-group"}, "device group 'no-such-group' does not exist"),
        ({"schedule": "every tuesday"}, "cron"),
    ],
)
def test_create_run_validation(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str, change: dict, message: str
):
    response = api.post(project_url + qapi.TEST_RUNS, json={**run_request(sandbox_faultfree), **change})
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_create_run_rejects_non_json(api: requests.Session, project_url: str):
    response = api.post(project_url + qapi.TEST_RUNS, data=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_run_lifecycle(sandbox_faultfree: Sandbox, api: requests.Session, project_url: str):
    sb = sandbox_faultfree
    runs = {}
    for outcome, params in (("success", "-Verbose"), ("failed", "-Mode FAIL")):
        response = api.post(project_url + qapi.TEST_RUNS, json=run_request(sb, params))
        assert response.status_code == 200
        run = response.json()
        assert run["jobs"] == []
        assert run["scheduled"].endswith("+00:00")
        runs[outcome] = run["testRunId"]
    seen: dict[str, list[str]] = {k: [] for k in runs}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for outcome, run_id in runs.items():
            jobs = api.get(project_url + qapi.test_run_jobs(run_id)).json()
            state = qapi.run_state_from_jobs(jobs).value
            if not seen[outcome] or seen[outcome][-1] != state:
                seen[outcome].append(state)
        if all(states[-1] in ("success", "failed") for states in seen.values()):
            break
        time.sleep(0.1)
    assert seen == {"success": ["queued", "running", "success"], "failed": ["queued", "running", "failed"]}
    listed = [r["testRunId"] for r in api.get(project_url + qapi.TEST_RUNS).json()]
    assert listed[:2] == [runs["failed"], runs["success"]]  # newest first
    jobs = api.get(project_url + qapi.test_run_jobs(runs["failed"])).json()
    group = next(
        g for g in sb.data.device_groups if g.record["deviceGroupId"] == run_request(sb)["deviceGroupId"]
    )
    assert [j["name"] for j in jobs] == [d["deviceSelectionId"] for d in group.devices]
    assert all(j["hasArtifacts"] and j["status"] == "failed" for j in jobs)
    job = api.get(project_url + qapi.job(jobs[0]["id"])).json()
    assert job == jobs[0]
    log = api.get(project_url + qapi.job_log(job["id"]))
    assert log.headers["content-type"].startswith("text/plain")
    assert log.text.rstrip().endswith("Job finished: failed")


def test_job_statuses_pass_through_pending_and_running(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    run = api.post(project_url + qapi.TEST_RUNS, json=run_request(sandbox_faultfree)).json()
    statuses: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not statuses or statuses[-1] != "success"):
        jobs = api.get(project_url + qapi.test_run_jobs(run["testRunId"])).json()
        if jobs and (not statuses or statuses[-1] != jobs[0]["status"]):
            statuses.append(jobs[0]["status"])
        time.sleep(0.05)
    assert statuses == ["pending", "running", "success"]


def started_jobs(sb: Sandbox, api: requests.Session, project_url: str) -> list:
    """The jobs of a run started now, once it has some (it is queued first)."""
    run = api.post(project_url + qapi.TEST_RUNS, json=run_request(sb)).json()
    deadline = time.monotonic() + 10
    jobs: list = []
    while not jobs and time.monotonic() < deadline:
        jobs = api.get(project_url + qapi.test_run_jobs(run["testRunId"])).json()
        time.sleep(0.05)
    return jobs


def test_live_log_streams_while_the_job_runs(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    jobs = started_jobs(sandbox_faultfree, api, project_url)
    chunks: list[tuple[float, str]] = []
    with api.get(project_url + qapi.job_log(jobs[0]["id"], live=True), stream=True, timeout=10) as response:
        assert response.status_code == 200
        for chunk in response.iter_content(chunk_size=None, decode_unicode=True):
            chunks.append((time.monotonic(), chunk))
    text = "".join(c for _, c in chunks)
    assert len(chunks) >= 3
    assert chunks[-1][0] - chunks[0][0] > 0.3  # the stream followed the job, it was not one burst
    assert text.rstrip().endswith("Job finished: success")
    assert text == api.get(project_url + qapi.job_log(jobs[0]["id"])).text


def test_generated_job_log_artifacts_and_live_log(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    jobs = list(sandbox_faultfree.expected_jobs())
    with_artifacts = next(j for j in jobs if j["hasArtifacts"])
    without = next(j for j in jobs if not j["hasArtifacts"])

    response = api.get(project_url + qapi.job_artifacts(with_artifacts["id"]))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        assert zf.testzip() is None
        assert {"log.txt", "results.xml", "screenshots/final.png"} == set(zf.namelist())
        log = zf.read("log.txt").decode()
    assert log == api.get(project_url + qapi.job_log(with_artifacts["id"])).text
    assert log == api.get(project_url + qapi.job_log(with_artifacts["id"], live=True)).text
    assert f"Job finished: {with_artifacts['status']}" in log

    missing = api.get(project_url + qapi.job_artifacts(without["id"]))
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


# --- fidelity to the vendor's evidence (issue 11) ----------------------------------------------------


def wait_for_jobs(api: requests.Session, project_url: str, run_id: str, timeout: float = 20) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = api.get(project_url + qapi.test_run_jobs(run_id)).json()
        if jobs:
            return jobs
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} got no jobs within {timeout} s")


def test_an_ad_hoc_device_group_is_accepted(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    # the C# client's tag groups: a new GUID with its devices, sent as a whole deviceGroup object
    body = run_request(sandbox_faultfree)
    del body["deviceGroupId"]
    group_id = "0b0f5f8e-7c5e-4a43-9a3f-2f1d3d3c9d11"
    body["deviceGroup"] = {
        "deviceGroupId": group_id,
        "name": None,
        "devices": [
            {"deviceSelectionId": None, "name": None, "tags": ["android", "physical"], "variables": {}}
        ],
        "variables": {},
    }
    response = api.post(project_url + qapi.TEST_RUNS, json=body)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["deviceGroup"] == group_id
    assert run["branch"] is None
    jobs = wait_for_jobs(api, project_url, run["testRunId"])
    assert len(jobs) == 1 and isinstance(jobs[0]["name"], str) and jobs[0]["name"]
    # both names for the group, as the provider sends them
    both = {**run_request(sandbox_faultfree), "deviceGroup": body["deviceGroup"], "deviceGroupId": group_id}
    assert api.post(project_url + qapi.TEST_RUNS, json=both).status_code == 200


def test_an_unknown_group_id_without_devices_is_still_refused(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    body = {
        **run_request(sandbox_faultfree),
        "deviceGroup": {"deviceGroupId": "0b0f5f8e-7c5e-4a43-9a3f-2f1d3d3c9d12"},
    }
    del body["deviceGroupId"]
    assert api.post(project_url + qapi.TEST_RUNS, json=body).status_code == 400


def test_routes_and_run_guids_match_case_insensitively(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    sb = sandbox_faultfree
    assert api.get(sb.api_url + "/API/Version").status_code == 200
    upper_project = project_url.replace("/api/", "/API/")
    assert api.get(upper_project + "TESTRUN").status_code == 200
    assert api.get(upper_project + "devicegroup").json() == [g.record for g in sb.data.device_groups]
    generated = sb.data.run_id(3)
    assert api.get(project_url + f"testrun/{generated.upper()}/Jobs").json() == sb.data.jobs(3)
    created = api.post(project_url + qapi.TEST_RUNS, json=run_request(sb)).json()["testRunId"]
    wait_for_jobs(api, project_url, created)
    response = api.get(project_url + qapi.test_run_jobs(created.upper()))
    assert response.status_code == 200 and response.json()
    for job in response.json():
        assert api.get(project_url + f"Job/{job['id']}").status_code == 200
    group = sb.data.device_groups[0].record["deviceGroupId"].upper()
    body = {**run_request(sb), "deviceGroupId": group}
    body["app"] = {**body["app"], "operatingSystem": sb.data.device_groups[0].operating_system}
    assert api.post(project_url + "TestRun", json=body).status_code in (200, 400)  # routed, not 404


def test_listed_runs_newest_first_with_offsetless_scheduled_and_32_bit_job_ids(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    sb = sandbox_faultfree
    created = api.post(project_url + qapi.TEST_RUNS, json=run_request(sb)).json()["testRunId"]
    runs = api.get(project_url + qapi.TEST_RUNS).json()
    assert runs[0]["testRunId"] == created
    generated = [r for r in runs if sb.data.run_index(r["testRunId"]) is not None]
    indexes = [sb.data.run_index(r["testRunId"]) for r in generated]
    assert indexes == sorted(indexes, reverse=True)
    assert all("+" not in r["scheduled"] and not r["scheduled"].endswith("Z") for r in generated)
    assert any(r["operatingSystem"] is None for r in generated)
    jobs = (
        wait_for_jobs(api, project_url, created)
        + api.get(project_url + qapi.test_run_jobs(runs[1]["testRunId"])).json()
    )
    assert jobs and all(0 < job["id"] < 2**31 for job in jobs)  # the C# and Java clients read an int


def test_uploaded_test_packages_keep_their_extension(api: requests.Session, project_url: str):
    files = {qapi.UPLOAD_FILE_FIELD: ("genymotiontest.ps1", b"Describe 'x' {}")}
    (package,) = api.post(project_url + qapi.TEST_PACKAGES, files=files).json()
    assert package["name"] == "genymotiontest.ps1"
    assert package["testPackageType"] == "PowerShellScript"


def test_live_log_replays_from_the_start_on_each_request(
    sandbox_faultfree: Sandbox, api: requests.Session, project_url: str
):
    """What a reconnecting follower (logs.JobLogFollower) relies on: each request starts at line 1."""
    jobs = started_jobs(sandbox_faultfree, api, project_url)
    url = project_url + qapi.job_log(jobs[0]["id"], live=True)
    with api.get(url, stream=True, timeout=10) as first:
        head = next(first.iter_lines(decode_unicode=True))
    with api.get(url, stream=True, timeout=10) as again:
        replay = [line for line in again.iter_lines(decode_unicode=True)]
    assert head.startswith(f"Quamotion sandbox runner: job {jobs[0]['id']}")
    assert replay[0] == head and replay[-1] == "Job finished: success"
