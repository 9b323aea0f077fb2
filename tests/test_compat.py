"""The one bridge across Airflow 3.0-3.3: every name resolves to what the running Airflow uses.

These tests run on every supported minor (``make test-matrix``): what they check differs per version
only through the version flags, never through a skip.
"""

from __future__ import annotations

import importlib
import json
import logging
import threading
import warnings
from pathlib import Path

import airflow
import jsonschema
import pytest
from packaging.version import Version

from airflow_provider_quamotion import compat, get_provider_info

VERSION = Version(Version(airflow.__version__).base_version)


def test_version_flags_follow_the_running_airflow() -> None:
    assert compat.AIRFLOW_V_3_1_PLUS is (Version("3.1") <= VERSION)
    assert compat.AIRFLOW_V_3_2_PLUS is (Version("3.2") <= VERSION)
    assert compat.AIRFLOW_V_3_3_PLUS is (Version("3.3") <= VERSION)
    assert compat.DECLARATIVE_CONNECTION_FORM is compat.AIRFLOW_V_3_2_PLUS
    assert compat.HAS_RESUMABLE_JOBS is compat.AIRFLOW_V_3_3_PLUS


@pytest.mark.parametrize(
    "name", ["AirflowException", "AirflowFailException", "AirflowSensorTimeout", "TaskDeferred"]
)
def test_exceptions_are_the_ones_the_task_runner_catches(name: str) -> None:
    """3.0/3.1's runner catches ``airflow.exceptions``' classes, 3.2+'s the SDK's: ours is that very class
    (an ``AirflowFailException`` that was another class would be retried instead of failing the task)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3.2+ deprecates the core names
        core = getattr(importlib.import_module("airflow.exceptions"), name)
    assert getattr(compat, name) is core
    sdk_exceptions = importlib.import_module("airflow.sdk.exceptions")
    if compat.AIRFLOW_V_3_2_PLUS:
        assert getattr(sdk_exceptions, name) is getattr(compat, name)
    else:
        assert not hasattr(sdk_exceptions, name) or getattr(sdk_exceptions, name) is getattr(compat, name)


def test_base_hook_is_the_sdk_one_where_it_exists() -> None:
    expected = "airflow.sdk" if compat.AIRFLOW_V_3_1_PLUS else "airflow.hooks.base"
    assert compat.BaseHook is importlib.import_module(expected).BaseHook
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    assert issubclass(QuamotionHook, compat.BaseHook)


def test_conf_and_import_string_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert compat.conf.getboolean("operators", "default_deferrable") is True
    assert compat.import_string("airflow_provider_quamotion.compat.log_degraded") is compat.log_degraded
    with pytest.raises(ImportError):
        compat.import_string("airflow_provider_quamotion.compat.no_such_name")


def test_mask_secret_reaches_the_running_airflows_masker() -> None:
    """On 3.0 ``airflow.sdk.log`` has no ``mask_secret``: the one of ``execution_time.secrets_masker``."""
    from airflow.providers.common.compat.sdk import redact

    secret = "s3cr3t-value-for-the-masker"
    compat.mask_secret(secret)
    assert secret not in str(redact(f"token {secret} end"))


def test_resumable_job_mixin_is_the_sdks_or_the_stand_in() -> None:
    mixin = compat.ResumableJobMixin
    if compat.HAS_RESUMABLE_JOBS:
        assert mixin is importlib.import_module("airflow.sdk").ResumableJobMixin
    else:
        assert mixin.__module__ == "airflow.providers.common.compat._resumable_job_mixin"


def test_lazy_names_are_kept_and_unknown_ones_raise() -> None:
    first = compat.BaseHook
    assert compat.__dict__["BaseHook"] is first
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = compat.NoSuchThing


def test_a_degraded_feature_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    feature = "test feature (Airflow 9.9)"
    with caplog.at_level(logging.WARNING, logger="airflow_provider_quamotion.compat"):
        assert compat.log_degraded(feature, "the provider does without") is True
        assert compat.log_degraded(feature, "the provider does without") is False
    lines = [r.getMessage() for r in caplog.records if feature in r.getMessage()]
    assert lines == [f"Airflow {airflow.__version__} has no {feature}: the provider does without"]


def test_connection_form_widgets_mirror_the_declarative_fields() -> None:
    from wtforms import PasswordField, StringField

    (conn,) = get_provider_info()["connection-types"]
    widgets = compat.connection_form_widgets()
    assert list(widgets) == list(conn["conn-fields"])
    for name, spec in conn["conn-fields"].items():
        field = widgets[name]
        password = spec["schema"].get("format") == "password"
        assert field.field_class is (PasswordField if password else StringField), name
        assert field.args == (spec["label"],)
        assert field.kwargs["description"] == spec["description"]
        assert field.kwargs["default"] == spec["schema"].get("default")
    assert widgets["api_key"].field_class is PasswordField
    assert widgets["tenant_id"].field_class is StringField


def test_ui_field_behaviour_is_valid_for_the_providers_manager() -> None:
    schema = json.loads(
        (Path(airflow.__file__).parent / "customized_form_field_behaviours.schema.json").read_text()
    )
    behaviour = compat.connection_ui_field_behaviour()
    jsonschema.validate(behaviour, schema)
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["relabeling"]["host"] == "API base URL"


def test_the_hook_defines_the_form_methods_only_where_airflow_reads_them() -> None:
    """3.2+ warns about a hook defining them (it reads the provider info); 3.0/3.1 read only them."""
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    for method in ("get_connection_form_widgets", "get_ui_field_behaviour"):
        assert (method in QuamotionHook.__dict__) is (not compat.DECLARATIVE_CONNECTION_FORM), method
    if not compat.DECLARATIVE_CONNECTION_FORM:
        assert QuamotionHook.get_ui_field_behaviour() == compat.connection_ui_field_behaviour()
        assert set(QuamotionHook.get_connection_form_widgets()) == set(compat.connection_form_widgets())


async def test_aget_connection_reads_the_connection_inside_an_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_COMPAT_PROBE", json.dumps({"conn_type": "quamotion", "host": "https://probe.invalid"})
    )
    conn = await compat.aget_connection(compat.BaseHook, "compat_probe")
    assert conn.host == "https://probe.invalid"


async def test_without_aget_connection_the_lookup_runs_off_the_event_loop() -> None:
    """Airflow 3.0's hooks have only the blocking lookup: it runs in a worker thread, not the loop's."""

    class BlockingOnly:
        @staticmethod
        def get_connection(conn_id: str) -> tuple[str, int]:
            return conn_id, threading.get_ident()

    conn_id, thread = await compat.aget_connection(BlockingOnly, "compat_probe")
    assert conn_id == "compat_probe"
    assert thread != threading.get_ident()


async def test_an_aget_connection_without_a_supervisor_falls_back_below_3_2() -> None:
    """3.1.0's ``aget_connection`` outside a triggerer fails importing the supervisor's channel."""

    class NoSupervisor:
        @staticmethod
        async def aget_connection(conn_id: str) -> str:
            raise ImportError("cannot import name 'SUPERVISOR_COMMS'")

        @staticmethod
        def get_connection(conn_id: str) -> str:
            return f"blocking {conn_id}"

    if compat.AIRFLOW_V_3_2_PLUS:
        with pytest.raises(ImportError, match="SUPERVISOR_COMMS"):
            await compat.aget_connection(NoSupervisor, "compat_probe")
    else:
        assert await compat.aget_connection(NoSupervisor, "compat_probe") == "blocking compat_probe"


_CATCHES_IMPORT_ERROR = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


def _airflow_imports() -> list[tuple[str, int, str, list[str]]]:
    """Every ``from airflow... import`` of the package that runs (not under ``TYPE_CHECKING``, not in a
    ``try`` that handles ``ImportError``), module level or inside functions: ``(path, line, module,
    names)``."""
    import ast

    import airflow_provider_quamotion

    found: list[tuple[str, int, str, list[str]]] = []

    def visit(node: ast.AST, path: Path, guarded: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(ast.Module(child.orelse, []), path, guarded)
            elif isinstance(child, ast.Try) and any(
                h.type is None or _CATCHES_IMPORT_ERROR & set(ast.unparse(h.type).strip("()").split(", "))
                for h in child.handlers
            ):
                visit(ast.Module(child.body, []), path, True)
                rest = [s for h in child.handlers for s in h.body] + child.orelse + child.finalbody
                visit(ast.Module(rest, []), path, guarded)
            elif isinstance(child, ast.ImportFrom) and (child.module or "").split(".")[0] == "airflow":
                if not guarded:
                    found.append((str(path), child.lineno, child.module or "", [a.name for a in child.names]))
            else:
                visit(child, path, guarded)

    for path in Path(airflow_provider_quamotion.__file__).parent.rglob("*.py"):
        visit(ast.parse(path.read_text()), path, False)
    return found


def test_every_airflow_import_of_the_package_resolves_on_this_airflow() -> None:
    """What runs on 3.3 must import on 3.0 too: a name that moved goes through compat, or is guarded."""
    imports = _airflow_imports()
    assert len(imports) > 10  # the walk found the package's imports
    missing = []
    for path, line, module, names in imports:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecated old home still imports
            try:
                target = importlib.import_module(module)
            except ImportError as err:
                missing.append(f"{path}:{line} {module}: {err}")
                continue
            missing += [f"{path}:{line} {module}.{name}" for name in names if not hasattr(target, name)]
    assert not missing, missing
