"""A local emulator of Quamotion Cloud and of Azure AD's token endpoint, over TLS, for tests and DAG development.

Importing this package is cheap; the heavy modules load on first use::

    from airflow_provider_quamotion.sandbox import Sandbox

    with Sandbox(runs=300, seed=0) as sb:
        ...  # sb.connection_json is a ready-made AIRFLOW_CONN_QUAMOTION_DEFAULT

See ``docs/sandbox.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_quamotion.sandbox.faults import FaultConfig, FaultRule
    from airflow_provider_quamotion.sandbox.runtime import SandboxServer
    from airflow_provider_quamotion.sandbox.server import Sandbox

__all__ = ["FaultConfig", "FaultRule", "Sandbox", "SandboxServer"]

_LAZY = {
    "Sandbox": "airflow_provider_quamotion.sandbox.server",
    "SandboxServer": "airflow_provider_quamotion.sandbox.runtime",
    "FaultConfig": "airflow_provider_quamotion.sandbox.faults",
    "FaultRule": "airflow_provider_quamotion.sandbox.faults",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
