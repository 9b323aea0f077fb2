"""The provider info: valid against Airflow's schema, and the quamotion hook resolves cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


#: Loads the hook and its connection form through Airflow's own managers, every warning an error, and
#: prints what they hold. ``providers``: the providers manager (3.2+: the task runtime's for the hooks,
#: the core one for the form); ``hook_meta``: the api-server's connection hook meta endpoint's service,
#: in a process of its own (on 3.0/3.1 it must be the first to load the form: it swaps WTForms for its
#: own stand-ins while it does).
_LOAD = """
import json, sys, warnings
warnings.simplefilter("error")
import airflow
from airflow.providers_manager import ProvidersManager
if sys.argv[1] == "providers":
    try:
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow < 3.2: the core manager knows the hooks
        hooks = ProvidersManager().hooks
    else:
        hooks = ProvidersManagerTaskRuntime().hooks
    hook = hooks["quamotion"]
    pm = ProvidersManager()
    out = {
        "hook": [hook.hook_class_name, hook.hook_name, hook.connection_id_attribute_name],
        "widgets": {
            k: [w.hook_class_name, w.field_name, w.is_sensitive]
            for k, w in pm.connection_form_widgets.items()
            if "__quamotion__" in k
        },
        "behaviour": pm.field_behaviours["quamotion"],
    }
else:
    # Airflow 3.2.0's own endpoint code reads the deprecated ProvidersManager.hooks: not ours to fix.
    warnings.filterwarnings("ignore", message="ProvidersManager.hooks is deprecated")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    (meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "quamotion"]
    out = meta.model_dump(mode="json")
print("LOADED " + json.dumps(out))
"""


def _load(what: str, tmp_path: Path) -> dict[str, Any]:
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, what], capture_output=True, text=True, timeout=180, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (line,) = [ln for ln in out.stdout.splitlines() if ln.startswith("LOADED ")]
    loaded: dict[str, Any] = json.loads(line.removeprefix("LOADED "))
    return loaded


def _conn_type() -> dict[str, Any]:
    (conn,) = get_provider_info()["connection-types"]
    return dict(conn)


def test_providers_manager_loads_the_hook_and_form_without_deprecation_warnings(tmp_path: Path) -> None:
    """3.2+ reads the declarative form (a hook still defining the form methods warns there); 3.0/3.1
    read the hook's methods. Either way: the same fields, the API key sensitive, the same relabelling."""
    loaded = _load("providers", tmp_path)
    class_name, hook_name, conn_id_attr = loaded["hook"]
    assert class_name.endswith("QuamotionHook"), loaded["hook"]
    assert (hook_name, conn_id_attr) == ("Quamotion Cloud", "quamotion_conn_id")
    fields = _conn_type()["conn-fields"]
    assert set(loaded["widgets"]) == {f"extra__quamotion__{name}" for name in fields}
    for name, spec in fields.items():
        owner, field_name, sensitive = loaded["widgets"][f"extra__quamotion__{name}"]
        assert owner.endswith("QuamotionHook") and field_name == name
        assert sensitive is (spec["schema"].get("format") == "password"), name
    assert loaded["widgets"]["extra__quamotion__api_key"][2] is True
    behaviour = loaded["behaviour"]
    assert set(behaviour["hidden_fields"]) == {"schema", "port"}
    assert behaviour["relabeling"]["host"] == "API base URL"
    assert behaviour["placeholders"]["extra__quamotion__tenant_id"].startswith("contoso")


def test_the_api_servers_hook_meta_shows_the_form(tmp_path: Path) -> None:
    """What the UI's connection form is drawn from (``GET /ui/connections/hook_meta``), on every minor."""
    meta = _load("hook_meta", tmp_path)
    assert meta["hook_name"] == "Quamotion Cloud"
    fields = _conn_type()["conn-fields"]
    extra = meta["extra_fields"]
    assert set(extra) == set(fields)
    for name, spec in fields.items():
        assert extra[name]["schema"]["title"] == spec["label"], name
        assert extra[name]["description"] == spec["description"], name
        assert extra[name]["value"] == spec["schema"].get("default"), name
    assert extra["api_key"]["schema"]["format"] == "password"
    assert "format" not in extra["tenant_id"]["schema"]
    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "API base URL"
    assert standard["login"]["title"] == "Client ID"
    assert standard["password"]["title"] == "Client secret"
    assert standard["url_schema"]["hidden"] is True and standard["port"]["hidden"] is True
