"""How a sandbox server behaves (kept apart so the Python API imports nothing heavy)."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_quamotion.sandbox.data import DataSettings
from airflow_provider_quamotion.sandbox.faults import FaultConfig

DEFAULT_TOKEN_LIFETIME = 3600


@dataclass
class ServerOptions:
    """How a sandbox server behaves.

    :param data: the generated data's seed, size and time span.
    :param queue_seconds: how long a created test run stays queued (no jobs).
    :param run_seconds: how long a created test run's jobs run (``pending`` then ``running``).
    :param token_lifetime: default lifetime in seconds of issued tokens.
    :param faults: faults active from the start.
    """

    data: DataSettings = field(default_factory=DataSettings)
    queue_seconds: float = 1.0
    run_seconds: float = 2.0
    token_lifetime: int = DEFAULT_TOKEN_LIFETIME
    faults: FaultConfig | None = None
