"""One operator API: the shared base, ``hook_params`` everywhere, the parse-time checks, the layering."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests_mock as rm
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.operators.base import QuamotionTaskMixin
from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator
from airflow_provider_quamotion.operators.test_run import (
    QuamotionJobArtifactsOperator,
    QuamotionStartTestRunOperator,
    QuamotionUploadOperator,
)
from airflow_provider_quamotion.runs import check_mapping, rendered_dict_error
from airflow_provider_quamotion.sensors.quamotion import QuamotionSensor, QuamotionTestRunSensor

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_quamotion"

START = {"app": {"appId": "a"}, "test_package": {"name": "p"}, "device_group": {"deviceGroupId": "g"}}
#: Every Quamotion operator and sensor with the least arguments it needs.
TASKS: dict[str, tuple[type, dict[str, Any]]] = {
    "api": (QuamotionApiOperator, {"endpoint": "testRun"}),
    "export": (QuamotionExportOperator, {"resource": "test_runs", "destination": "/tmp/x.jsonl"}),
    "start": (QuamotionStartTestRunOperator, {**START, "wait_for_completion": True}),
    "upload": (QuamotionUploadOperator, {"path": "/tmp/app.apk"}),
    "artifacts": (QuamotionJobArtifactsOperator, {"test_run_id": "r", "destination": "/tmp/out"}),
    "run_sensor": (QuamotionTestRunSensor, {"test_run_id": "r"}),
    "sensor": (QuamotionSensor, {"endpoint": "testRun"}),
}
DEFERRABLE = ("start", "run_sensor", "sensor")


def make(name: str, **kwargs: Any) -> Any:
    cls, required = TASKS[name]
    return cls(task_id=f"t_{name}", **{**required, **kwargs})


@pytest.mark.parametrize("name", TASKS)
def test_every_task_shares_the_base_and_templates_the_conn_id(name: str) -> None:
    task = make(name, quamotion_conn_id="qm", hook_params={"timeout": 5})
    assert isinstance(task, QuamotionTaskMixin)
    assert "quamotion_conn_id" in task.template_fields
    assert task.quamotion_conn_id == "qm"
    assert task.hook_params == {"timeout": 5}


@pytest.mark.parametrize("name", TASKS)
def test_hook_settings_is_accepted_with_a_deprecation_warning(name: str) -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match="hook_params"):
        task = make(name, hook_settings={"timeout": 7})
    assert task.hook_params == {"timeout": 7}
    assert task.hook_settings == {"timeout": 7}  # read-only alias, one release
    with pytest.raises(QuamotionConfigError, match="hook_params= only"):
        make(name, hook_params={"timeout": 1}, hook_settings={"timeout": 7})


@pytest.mark.parametrize("name", TASKS)
def test_hook_params_is_validated_the_same_way_at_parse_time(name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # hook_params= itself warns about nothing
        make(name, hook_params={"timeout": 5})
    with pytest.raises(QuamotionConfigError, match="Unknown hook setting"):
        make(name, hook_params={"retries": 2})
    with pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        make(name, hook_params="{'timeout': 5}")
    with pytest.raises(QuamotionConfigError, match="must be a dict"):
        make(name, hook_params=["timeout"])


@pytest.mark.parametrize("name", DEFERRABLE)
def test_deferrable_tasks_refuse_secrets_at_parse_time(name: str) -> None:
    with pytest.raises(QuamotionConfigError, match="connection"):
        make(name, deferrable=True, hook_params={"client_secret": "x"})
    make(name, deferrable=False, hook_params={"client_secret": "x"})  # stays in the worker


def test_init_builds_no_hook() -> None:
    with rm.Mocker() as mocker:  # no route: any request would raise
        for name in TASKS:
            task = make(name)
            assert "hook" not in vars(task)
        assert not mocker.called


# --- the start operator ----------------------------------------------------------------------------


def test_start_operator_takes_poke_interval_and_deprecates_poll_interval() -> None:
    assert QuamotionStartTestRunOperator(task_id="s", **START, poke_interval=2).poke_interval == 2.0
    with pytest.warns(AirflowProviderDeprecationWarning, match="poke_interval"):
        op = QuamotionStartTestRunOperator(task_id="s", **START, poll_interval=3)
    assert op.poke_interval == op.poll_interval == 3.0
    with pytest.raises(QuamotionConfigError, match="poke_interval"):
        QuamotionStartTestRunOperator(task_id="s", **START, poke_interval=0)


def test_start_operator_warns_when_deferrable_without_waiting() -> None:
    with pytest.warns(UserWarning, match="wait_for_completion"):
        QuamotionStartTestRunOperator(task_id="s", **START, deferrable=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        QuamotionStartTestRunOperator(task_id="s", **START, deferrable=True, wait_for_completion=True)
        QuamotionStartTestRunOperator(task_id="s", **START, deferrable=False)


def test_start_operator_that_does_not_wait_never_carries_hook_params_to_a_trigger() -> None:
    with pytest.warns(UserWarning, match="wait_for_completion"):
        QuamotionStartTestRunOperator(task_id="s", **START, deferrable=True, hook_params={"api_key": "k"})


# --- dicts that Jinja rendered to strings ---------------------------------------------------------------


@pytest.mark.parametrize("text", ["{'a': 1}", '{"a": 1}', " {'a': {'b': [1, 2]}} "])
def test_a_rendered_dict_is_recognised(text: str) -> None:
    err = rendered_dict_error("query_params", text)
    assert err is not None
    assert "render_template_as_native_obj=True" in str(err) and "as a name" in str(err)
    with pytest.raises(QuamotionConfigError, match="rendered to text"):
        check_mapping("query_params", text)


@pytest.mark.parametrize("text", ["Shop", "Shop:2.3.0", "{{ not rendered", "{1, 2}", "{}x"])
def test_other_strings_are_not_taken_for_rendered_dicts(text: str) -> None:
    assert rendered_dict_error("app", text) is None


def test_api_operator_refuses_rendered_query_params_before_any_request(mocked_connection: Any) -> None:
    op = QuamotionApiOperator(task_id="t", endpoint="testRun", query_params="{'state': 'done'}")  # type: ignore[arg-type]
    with rm.Mocker() as mocker, pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        op.execute({})  # type: ignore[arg-type]
    assert not mocker.called


def test_sensor_refuses_rendered_query_params(mocked_connection: Any) -> None:
    sensor = QuamotionSensor(task_id="s", endpoint="testRun", query_params="{'a': 1}")  # type: ignore[arg-type]
    with rm.Mocker() as mocker, pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        sensor.poke({})  # type: ignore[arg-type]
    assert not mocker.called


def test_export_operator_refuses_rendered_query_params(mocked_connection: Any) -> None:
    op = QuamotionExportOperator(
        task_id="e",
        endpoint="testRun",
        destination="/tmp/q.jsonl",
        query_params="{'a': 1}",  # type: ignore[arg-type]
    )
    with rm.Mocker() as mocker, pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        op.execute({})  # type: ignore[arg-type]
    assert not mocker.called


def test_start_operator_refuses_a_rendered_app_dict_and_says_to_pass_a_name(mocked_connection: Any) -> None:
    op = QuamotionStartTestRunOperator(
        task_id="s", app="{'appId': 'com.shop', 'version': '2'}", test_package="smoke", device_group="g"
    )
    with rm.Mocker() as mocker, pytest.raises(QuamotionConfigError, match="as a name") as err:
        op.submit_job({})  # type: ignore[arg-type]
    assert "app is the string" in str(err.value) and "render_template_as_native_obj" in str(err.value)
    assert not mocker.called


# --- layering and parse-time import cost -------------------------------------------------------------


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every ``from X import`` / ``import X`` of a file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body} | {
        id(c) for n in tree.body if isinstance(n, ast.If) for c in n.body
    }  # module level, or under `if TYPE_CHECKING:`
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
        elif isinstance(node, ast.Import):
            out.extend((a.name, id(node) in top) for a in node.names)
    return out


def test_operators_do_not_import_sensors_and_import_triggers_only_where_they_defer() -> None:
    for path in sorted((PACKAGE / "operators").glob("*.py")):
        imports = _imports(path)
        assert not [m for m, _ in imports if m.startswith("airflow_provider_quamotion.sensors")], path
        assert not [m for m, top in imports if m.startswith("airflow_provider_quamotion.triggers") and top], (
            path
        )
        assert "airflow_provider_quamotion.sensors" not in path.read_text(), path


def test_sensors_import_triggers_only_where_they_defer() -> None:
    imports = _imports(PACKAGE / "sensors" / "quamotion.py")
    assert not [
        m
        for m, top in imports
        if top and (m.startswith("airflow_provider_quamotion.triggers") or m == "airflow.triggers.base")
    ]


def test_runs_sits_below_operators_sensors_and_triggers() -> None:
    mods = [m for m, _ in _imports(PACKAGE / "runs.py")]
    bad = ("operators", "sensors", "triggers", "export")
    assert not [m for m in mods if any(m.startswith(f"airflow_provider_quamotion.{b}") for b in bad)]
    assert "airflow.triggers.base" not in mods


def test_importing_operators_and_sensors_loads_no_trigger_module() -> None:
    """A fresh interpreter: parsing a DAG that uses every operator and sensor imports no trigger code."""
    code = (
        "import sys, json\n"
        "from airflow.sdk import BaseOperator, BaseSensorOperator  # what every DAG file imports\n"
        "before = set(sys.modules)  # (Airflow 3.1's airflow.sdk imports airflow.triggers.base itself)\n"
        "import airflow_provider_quamotion.operators.quamotion\n"
        "import airflow_provider_quamotion.operators.test_run\n"
        "import airflow_provider_quamotion.sensors.quamotion\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before if m == 'airflow.triggers.base'"
        " or m.startswith('airflow_provider_quamotion.triggers')"
        " or m.startswith('airflow_provider_quamotion.hooks'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_a_mapped_quamotion_operator_keeps_airflows_default_inlets_and_outlets() -> None:
    from airflow.sdk import DAG, AssetAlias

    with DAG("mapped", schedule=None):
        export = QuamotionExportOperator.partial(task_id="e", resource="jobs").expand(
            destination=["/a", "/b"]
        )
        alias = QuamotionExportOperator.partial(
            task_id="f", resource="jobs", asset_alias="x", outlets=[AssetAlias("x")]
        ).expand(destination=["/a"])
        api = QuamotionApiOperator.partial(task_id="g").expand(endpoint=["testRun"])
    for task in (export, alias, api):
        assert task.partial_kwargs["inlets"] == []  # None would fail the task before it runs
    assert export.partial_kwargs["outlets"] == [] and alias.partial_kwargs["outlets"] == [AssetAlias("x")]
