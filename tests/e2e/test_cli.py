"""The provider inside the real ``airflow`` CLI: ``providers list`` and ``connections test`` against the sandbox."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from airflow_provider_quamotion import __version__
from tests.dag_runs import AirflowHome, assert_no_secret
from tests.e2e.conftest import sandbox_connection

if TYPE_CHECKING:
    from airflow_provider_quamotion.sandbox import Sandbox

pytestmark = pytest.mark.e2e

CONN_ID = "quamotion_default"
ENV_VAR = "AIRFLOW_CONN_QUAMOTION_DEFAULT"
WRONG_SECRET = "e2e-wrong-secret-6b1f0c2e"


def _secrets(sandbox: Sandbox) -> list[str]:
    return [sandbox.client_secret, sandbox.api_key]


def test_providers_list_shows_the_provider(airflow_home: AirflowHome) -> None:
    proc = airflow_home.run("providers", "list", "--output", "json")
    start = proc.stdout.index("[")  # the JSON array (anything logged before it is not ours to parse)
    providers = json.loads(proc.stdout[start:])
    ours = [p for p in providers if p["package_name"] == "airflow-provider-quamotion"]
    assert ours, f"airflow-provider-quamotion missing from: {[p['package_name'] for p in providers]}"
    assert ours[0]["version"] == __version__
    assert "Quamotion Cloud" in ours[0]["description"]


def test_connection_type_is_registered(airflow_home: AirflowHome) -> None:
    proc = airflow_home.run("providers", "hooks", "--output", "json")
    start = proc.stdout.index("[")
    hooks = {h["connection_type"]: h for h in json.loads(proc.stdout[start:])}
    assert "quamotion" in hooks
    assert hooks["quamotion"]["class"] == "airflow_provider_quamotion.hooks.quamotion.QuamotionHook"
    assert hooks["quamotion"]["package_name"] == "airflow-provider-quamotion"
    assert hooks["quamotion"]["hook_name"] == "Quamotion Cloud"


def _assert_success(proc_stdout: str, proc_stderr: str, returncode: int, sandbox: Sandbox) -> None:
    output = proc_stdout + proc_stderr
    assert returncode == 0, output[-3000:]
    assert "Connection success!" in output
    assert_no_secret(output, _secrets(sandbox))


def test_connections_test_from_environment_variable(
    airflow_home: AirflowHome, sandbox_faultfree: Sandbox
) -> None:
    proc = airflow_home.run(
        "connections", "test", CONN_ID, env={ENV_VAR: sandbox_faultfree.connection_json}, check=False
    )
    _assert_success(proc.stdout, proc.stderr, proc.returncode, sandbox_faultfree)
    counters = sandbox_faultfree.counters()
    assert counters["tokens_issued"] >= 1, counters  # it really asked the sandbox's Azure AD
    assert counters["requests"] >= 2, counters


def test_connections_test_from_metadata_database(
    airflow_home: AirflowHome, sandbox_faultfree: Sandbox
) -> None:
    added = airflow_home.run(
        "connections", "add", CONN_ID, "--conn-json", json.dumps(sandbox_connection(sandbox_faultfree))
    )
    try:
        assert_no_secret(added.stdout + added.stderr, _secrets(sandbox_faultfree))
        proc = airflow_home.run("connections", "test", CONN_ID, check=False)  # no AIRFLOW_CONN_* set
        _assert_success(proc.stdout, proc.stderr, proc.returncode, sandbox_faultfree)
        assert sandbox_faultfree.counters()["tokens_issued"] >= 1
    finally:
        airflow_home.run("connections", "delete", CONN_ID)


def test_connections_test_with_a_wrong_secret_fails_clearly(
    airflow_home: AirflowHome, sandbox_faultfree: Sandbox
) -> None:
    wrong = sandbox_connection(sandbox_faultfree, password=WRONG_SECRET)
    proc = airflow_home.run("connections", "test", CONN_ID, env={ENV_VAR: json.dumps(wrong)}, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert "Connection failed!" in output
    assert "AADSTS7000215" in output  # Azure AD's "invalid client secret" code...
    assert "client secret is wrong" in output  # ...and what to do about it
    assert "Traceback" not in output
    assert_no_secret(output, [WRONG_SECRET, *_secrets(sandbox_faultfree)])


def test_connections_test_is_refused_while_testing_is_disabled(
    airflow_home: AirflowHome, sandbox_faultfree: Sandbox
) -> None:
    """Airflow's own switch: the hook is never called, so the sandbox sees no request."""
    proc = airflow_home.run(
        "connections",
        "test",
        CONN_ID,
        env={ENV_VAR: sandbox_faultfree.connection_json, "AIRFLOW__CORE__TEST_CONNECTION": "Disabled"},
        check=False,
    )
    assert proc.returncode != 0
    assert "disabled" in (proc.stdout + proc.stderr).lower()
    assert sandbox_faultfree.counters()["requests"] == 0
