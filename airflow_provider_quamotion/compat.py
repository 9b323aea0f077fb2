"""Every Airflow 3 minor (3.0 to 3.3) through one module: the Airflow names that moved, and the checks of
what a version has.

The rest of the package imports from here every Airflow name whose home changed between 3.0 and 3.3
(``airflow.sdk.exceptions``, ``airflow.sdk.BaseHook``, ``airflow.sdk.conf``, ``mask_secret``,
``import_string``, ``ResumableJobMixin``), never from its 3.3 home. Where
``apache-airflow-providers-common-compat`` bridges a name (its ``sdk`` module tries ``airflow.sdk``
first, then the older home), it is taken from there; the connection form of Airflow 3.0/3.1 (from the
hook's ``get_connection_form_widgets`` / ``get_ui_field_behaviour``, built here from the declarative
``conn-fields`` / ``ui-field-behaviour`` of :func:`airflow_provider_quamotion.get_provider_info`) has no
bridge there, so it is here.

Importing this module is cheap (DAG-parse time): the exceptions every module needs are resolved at
import, everything else on first use through the module's ``__getattr__``. A feature that arrived in a
later Airflow degrades with one log line per process (:func:`log_degraded`), never an import error.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    TaskDeferred,
)
from airflow.providers.common.compat.version_compat import (
    AIRFLOW_V_3_1_PLUS,
    AIRFLOW_V_3_2_PLUS,
    AIRFLOW_V_3_3_PLUS,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseHook as BaseHook
    from airflow.sdk import ResumableJobMixin as ResumableJobMixin
    from airflow.sdk import conf as conf
    from airflow.sdk.log import mask_secret as mask_secret
    from airflow.sdk.module_loading import import_string as import_string

__all__ = [
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "DECLARATIVE_CONNECTION_FORM",
    "HAS_RESUMABLE_JOBS",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "BaseHook",
    "ResumableJobMixin",
    "TaskDeferred",
    "aget_connection",
    "conf",
    "connection_form_widgets",
    "connection_ui_field_behaviour",
    "import_string",
    "log_degraded",
    "mask_secret",
]

log = logging.getLogger(__name__)

#: Airflow >= 3.2 reads the connection form from the provider info (``conn-fields``,
#: ``ui-field-behaviour``) and warns about a hook that still defines the form methods; Airflow 3.0/3.1
#: read it only from those methods, which the hook then defines.
DECLARATIVE_CONNECTION_FORM = AIRFLOW_V_3_2_PLUS
#: Airflow >= 3.3 keeps a ``task_state_store`` across the tries of a task instance (``ResumableJobMixin``).
HAS_RESUMABLE_JOBS = AIRFLOW_V_3_3_PLUS

#: Names resolved on first use: ``(module, attribute)``; common-compat's ``sdk`` module picks the home
#: the running Airflow has.
_LAZY: dict[str, tuple[str, str]] = {
    "BaseHook": ("airflow.providers.common.compat.sdk", "BaseHook"),
    "ResumableJobMixin": ("airflow.providers.common.compat.sdk", "ResumableJobMixin"),
    "conf": ("airflow.providers.common.compat.sdk", "conf"),
    "mask_secret": ("airflow.providers.common.compat.sdk", "mask_secret"),
    "import_string": ("airflow.providers.common.compat.module_loading", "import_string"),
}

_degraded: set[str] = set()
_degraded_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """Resolve a name of :data:`_LAZY` on first use (PEP 562) and keep it in the module.

    :param name: the attribute asked for.
    :raises AttributeError: the name is not one of this module's.
    """
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attribute)
    globals()[name] = value
    return value


def log_degraded(feature: str, consequence: str) -> bool:
    """Say once per process that this Airflow lacks ``feature`` and what the provider does instead.

    :param feature: what is missing, with the version that brings it (e.g. ``"task_state_store (Airflow
        3.3)"``).
    :param consequence: what happens without it.
    :return: ``True`` when this call logged (the first for ``feature``), ``False`` after.
    """
    with _degraded_lock:
        if feature in _degraded:
            return False
        _degraded.add(feature)
    import airflow

    log.warning("Airflow %s has no %s: %s", airflow.__version__, feature, consequence)
    return True


async def aget_connection(hook: Any, conn_id: str) -> Any:
    """Read a connection from inside an event loop (a trigger) without blocking it.

    Airflow 3.1+ has ``BaseHook.aget_connection``; 3.0 has only the blocking lookup, which runs in a
    worker thread through asgiref's ``sync_to_async`` (what Airflow 3.0's own triggers do). So does
    3.1.0's outside a supervised process (no triggerer: its ``aget_connection`` fails to import the
    supervisor's channel, where its blocking lookup reads the secrets backends).

    :param hook: the hook (or hook class) whose connection lookup to use.
    :param conn_id: the connection ID.
    """
    aget = getattr(hook, "aget_connection", None)
    if aget is not None:
        try:
            return await aget(conn_id)
        except ImportError:
            if AIRFLOW_V_3_2_PLUS:
                raise
    from asgiref.sync import sync_to_async

    return await sync_to_async(hook.get_connection)(conn_id)


def _connection_type() -> dict[str, Any]:
    from airflow_provider_quamotion import CONN_TYPE, get_provider_info

    (conn,) = (c for c in get_provider_info()["connection-types"] if c["connection-type"] == CONN_TYPE)
    return conn


def connection_form_widgets() -> dict[str, Any]:
    """The extra fields of the connection form as WTForms fields (Airflow 3.0/3.1's hook method).

    Built from the provider info's ``conn-fields``, so both Airflow generations show one form: a
    ``format: password`` field is a ``PasswordField`` (masked, sensitive), the others ``StringField``.
    The api-server of 3.0/3.1 substitutes its own stand-ins for these classes when it describes the form.

    :raises ImportError: WTForms is not installed (the providers manager then shows no extra fields).
    """
    from wtforms import PasswordField, StringField

    widgets: dict[str, Any] = {}
    for name, spec in _connection_type()["conn-fields"].items():
        schema = spec.get("schema", {})
        field = PasswordField if schema.get("format") == "password" else StringField
        widgets[name] = field(
            spec["label"], description=spec.get("description", ""), default=schema.get("default")
        )
    return widgets


def connection_ui_field_behaviour() -> dict[str, Any]:
    """The standard fields' behaviour (hidden, relabelled, placeholders): Airflow 3.0/3.1's hook method.

    The provider info's ``ui-field-behaviour`` with the keys that method uses (``hidden_fields``).
    """
    behaviour = _connection_type()["ui-field-behaviour"]
    return {key.replace("-", "_"): value for key, value in behaviour.items()}
