"""The provider info: valid against Airflow's schema, and the quamotion hook resolves cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema

from airflow_provider_quamotion import __version__, get_provider_info


def test_provider_info_validates_against_the_installed_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-quamotion"
    assert info["versions"] == [__version__]
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "quamotion"
    assert conn["hook-class-name"] == "airflow_provider_quamotion.hooks.quamotion.QuamotionHook"
    assert conn["hook-name"] == "Quamotion Cloud"
    fields = conn["conn-fields"]
    assert {"tenant_id", "project", "api_key", "authority_host", "resource"} <= set(fields)
    assert fields["api_key"]["schema"]["format"] == "password"
    behaviour = conn["ui-field-behaviour"]
    assert set(behaviour["hidden-fields"]) == {"schema", "port"}
    assert behaviour["relabeling"] == {
        "host": "API base URL",
        "login": "Client ID",
        "password": "Client secret",
    }


def test_providers_manager_resolves_the_hook_without_deprecation_warnings(tmp_path: Path) -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('error')\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime\n"
        "rt = ProvidersManagerTaskRuntime()\n"
        "assert 'airflow-provider-quamotion' in rt.providers, sorted(rt.providers)\n"
        "hook = rt.hooks['quamotion']\n"
        "pm = ProvidersManager()\n"
        "assert hook.hook_class_name.endswith('QuamotionHook'), hook\n"
        "assert hook.hook_name == 'Quamotion Cloud', hook\n"
        "widgets = pm.connection_form_widgets\n"
        "assert any(k.endswith('tenant_id') for k in widgets), list(widgets)[:20]\n"
        "fb = pm.field_behaviours['quamotion']\n"
        "assert fb['relabeling']['host'] == 'API base URL', fb\n"
        "print('resolved')\n"
    )
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resolved" in out.stdout
