"""The requests the vendor's own clients make, replayed against the sandbox with plain ``requests``.

Read from their source (not copied): the three Bitrise steps (bash with curl and wget) and the Java
client ``quamotion/quamotion-cloud-java`` as the Jenkins plugin drives it. Each test sends what the
client sends - form field names, multipart part names, JSON bodies, URL shapes - and checks what the
client reads back (``access_token``, ``.[0].relativeUrl``, ``.[0].appId``, ``.testRunId``,
``.[0].id``, an ``int`` job id, a followed live log, an artifacts zip).
"""

from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import pytest
import requests

from airflow_provider_quamotion.sandbox import Sandbox

from .conftest import tls_session


def _login(sb: Sandbox, session: requests.Session, field: str) -> str:
    # curl -d "apiKey=..." / okhttp FormBody("ApiKey", ...): form-encoded, no Authorization header
    response = session.post(sb.api_url + "/api/login", data={field: sb.api_key}, timeout=10)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str) and token
    return token


def _wait_for_first_job(
    session: requests.Session, url: str, headers: dict[str, str], timeout: float = 20
) -> dict[str, Any]:
    # the Bitrise step loops until jq '.[0].id' is not null; the Jenkins plugin polls the jobs list
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = session.get(url, headers=headers, timeout=10).json()
        if jobs and jobs[0].get("id") is not None:
            return jobs[0]
        time.sleep(0.1)
    raise AssertionError("no job appeared")


@pytest.fixture
def plain(sandbox_faultfree: Sandbox):
    with tls_session(sandbox_faultfree) as session:
        yield session


@pytest.mark.parametrize("group_by", ["guid", "name"])
def test_bitrise_steps_publish_app_package_and_start(
    sandbox_faultfree: Sandbox, plain: requests.Session, group_by: str
):
    sb = sandbox_faultfree
    token = _login(sb, plain, "apiKey")
    bearer = {"Authorization": f"Bearer {token}"}
    relative = plain.get(sb.api_url + "/api/project", headers=bearer).json()[0]["relativeUrl"]
    base = sb.api_url + relative

    # publish-app step: curl -F files=@$app_path .../api/app, then jq '.[0].appId' etc.
    app = plain.post(
        base + "api/app", headers=bearer, files={"files": ("Shop-2.4.0.apk", b"PK\x03\x04apk")}
    ).json()
    app_id, app_version, app_os = app[0]["appId"], app[0]["version"], app[0]["operatingSystem"]
    assert (app_os, app[0]["versionDisplayName"]) == ("Android", "2.4.0")
    # publish-test-package step: the same multipart upload to .../api/testPackage
    package = plain.post(
        base + "api/testPackage", headers=bearer, files={"files": ("bitrise-smoke-1.1.ps1", b"x")}
    )
    package_name, package_version = package.json()[0]["name"], package.json()[0]["version"]
    assert package_name == "bitrise-smoke.ps1"

    # start step: jq builds {app: {operatingSystem, appId, version}, testPackage: {name, version,
    # testScriptParameters}, deviceGroupId} - no schedule, no top-level script parameters
    group = next(g.record for g in sb.data.device_groups if g.operating_system == "Android")
    body = {
        "app": {"operatingSystem": app_os, "appId": app_id, "version": app_version},
        "testPackage": {"name": package_name, "version": package_version, "testScriptParameters": ""},
        "deviceGroupId": group["deviceGroupId"] if group_by == "guid" else group["name"],
    }
    response = plain.post(
        base + "api/testRun", headers={**bearer, "Content-Type": "application/json"}, json=body
    )
    assert response.status_code == 200, response.text
    run_id = response.json()["testRunId"]

    job = _wait_for_first_job(plain, f"{base}api/testRun/{run_id}/jobs", bearer)
    # wget -O - --header "Authorization: Bearer ..." .../api/job/{id}/log/live: followed to the end
    with plain.get(f"{base}api/job/{job['id']}/log/live", headers=bearer, stream=True, timeout=30) as live:
        assert live.status_code == 200
        text = b"".join(live.iter_content(None)).decode()
    assert text.rstrip("\n").splitlines()[-1].startswith("Job finished: ")
    # curl -s -o quamotion-artifacts.zip .../api/job/{id}/artifacts
    artifacts = plain.get(f"{base}api/job/{job['id']}/artifacts", headers=bearer)
    assert artifacts.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(artifacts.content)).namelist()


def test_java_client_flow_as_the_jenkins_plugin_drives_it(
    sandbox_faultfree: Sandbox, plain: requests.Session
):
    sb = sandbox_faultfree
    token = _login(sb, plain, "ApiKey")
    bearer = {"Authorization": f"Bearer {token}"}
    tenant = plain.get(sb.api_url + "/api/project", headers=bearer).json()[0]
    # the Java client builds "/project/" + tenant.name + "/api/..." (not relativeUrl)
    base = f"{sb.api_url}/project/{tenant['name']}/api/"
    upload_headers = {**bearer, "Accept": "application/json"}

    def send_file(endpoint: str, name: str) -> list[dict[str, Any]]:
        files = {"files": (name, b"PK\x03\x04java", "application/octet-stream")}
        response = plain.post(base + endpoint, headers=upload_headers, files=files)
        assert response.status_code == 200, response.text
        return response.json()

    (published_app,) = send_file("app", "Jenkins-3.0.1.ipa")
    (published_package,) = send_file("testPackage", "jenkins-tests-0.9.zip")
    # getApplication / getTestPackage / getDeviceGroup: list and match (appId, version, OS), (name,
    # version), deviceGroupId.toString() (a Java UUID prints lower case)
    app = next(
        a
        for a in plain.get(base + "app", headers=bearer).json()
        if (a["appId"], a["version"], a["operatingSystem"])
        == (published_app["appId"], published_app["version"], "iOS")
    )
    package = next(
        p
        for p in plain.get(base + "testPackage", headers=bearer).json()
        if (p["name"], p["version"]) == (published_package["name"], published_package["version"])
    )
    ios = next(g.record for g in sb.data.device_groups if g.operating_system == "iOS")
    group = next(
        g
        for g in plain.get(base + "deviceGroup", headers=bearer).json()
        if g["deviceGroupId"] == ios["deviceGroupId"].lower()
    )
    # scheduleTestRun: gson of the whole Application and TestPackage records, nulls left out
    body = {
        "app": {k: v for k, v in app.items() if v is not None},
        "deviceGroupId": group["deviceGroupId"],
        "schedule": "",
        "testPackage": package,
        "testScriptEnvironmentVariables": {},
        "testScriptParameters": "",
    }
    response = plain.post(
        base + "testRun", headers={**bearer, "Content-Type": "application/json; charset=utf-8"}, json=body
    )
    assert response.status_code == 200, response.text
    run = response.json()
    # getTestJobs until every job has finished; TestJob.id is a Java int
    deadline = time.monotonic() + 20
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = plain.get(f"{base}testRun/{run['testRunId']}/jobs", headers=bearer).json()
        if jobs and all(j["status"] in ("success", "failed", "canceled", "skipped") for j in jobs):
            break
        time.sleep(0.2)
    assert jobs and all(-(2**31) <= j["id"] < 2**31 for j in jobs)
    for job in jobs:
        # getJobLogLive: a plain GET read whole; then the job's artifacts
        log = plain.get(f"{base}job/{job['id']}/log/live", headers=bearer)
        assert log.status_code == 200 and log.text.rstrip("\n").endswith(f"Job finished: {job['status']}")
        if job["hasArtifacts"]:
            artifacts = plain.get(f"{base}job/{job['id']}/artifacts", headers=bearer)
            assert artifacts.status_code == 200 and artifacts.content[:2] == b"PK"
    # the historical list the plugin reads: every job id an int too
    listed = plain.get(base + "testRun", headers=bearer).json()
    assert listed[0]["testRunId"] == run["testRunId"]  # newest first
    for past in listed[1:4]:
        for job in plain.get(f"{base}testRun/{past['testRunId']}/jobs", headers=bearer).json():
            assert -(2**31) <= job["id"] < 2**31


def test_bitrise_script_parameters_inside_the_test_package_are_read(
    sandbox_faultfree: Sandbox, plain: requests.Session
):
    """The Bitrise start step puts ``testScriptParameters`` inside ``testPackage`` (none at the top)."""
    sb = sandbox_faultfree
    bearer = {"Authorization": f"Bearer {_login(sb, plain, 'apiKey')}"}
    base = sb.api_url + plain.get(sb.api_url + "/api/project", headers=bearer).json()[0]["relativeUrl"]
    app = plain.get(base + "api/app", headers=bearer).json()[0]
    package = plain.get(base + "api/testPackage", headers=bearer).json()[0]
    group = next(g.record for g in sb.data.device_groups if g.operating_system == app["operatingSystem"])
    body = {
        "app": {"operatingSystem": app["operatingSystem"], "appId": app["appId"], "version": app["version"]},
        "testPackage": {
            "name": package["name"],
            "version": package["version"],
            "testScriptParameters": "-Fail",
        },
        "deviceGroupId": group["deviceGroupId"],
    }
    run = plain.post(base + "api/testRun", headers=bearer, json=body).json()
    job = _wait_for_first_job(plain, f"{base}api/testRun/{run['testRunId']}/jobs", bearer)
    with plain.get(f"{base}api/job/{job['id']}/log/live", headers=bearer, stream=True, timeout=30) as live:
        text = b"".join(live.iter_content(None)).decode()
    assert text.rstrip("\n").splitlines()[-1] == "Job finished: failed"
