"""The running sandbox's settings and state, shared by its routes and middleware."""

from __future__ import annotations

from airflow_provider_quamotion.sandbox.data import SandboxData
from airflow_provider_quamotion.sandbox.faults import Counters, FaultConfig, FaultInjector
from airflow_provider_quamotion.sandbox.options import ServerOptions
from airflow_provider_quamotion.sandbox.state import Credentials
from airflow_provider_quamotion.sandbox.store import ProjectStore
from airflow_provider_quamotion.sandbox.tokens import TokenService


class SandboxContext:
    """Everything a request handler needs.

    :param credentials: the state dir's identities and signing key.
    :param options: the server's settings.
    """

    def __init__(self, credentials: Credentials, options: ServerOptions) -> None:
        self.credentials = credentials
        self.options = options
        self.data = SandboxData(options.data)
        self.stores = {
            p["name"]: ProjectStore(
                self.data, queue_seconds=options.queue_seconds, run_seconds=options.run_seconds
            )
            for p in self.data.projects
        }
        self.tokens = TokenService(credentials.signing_key, options.token_lifetime)
        self.injector = FaultInjector(options.data.seed)
        self.counters = Counters()
        self.apply_faults(options.faults or FaultConfig())

    def apply_faults(self, config: FaultConfig) -> None:
        """Replace the fault rules (and the token lifetime, when the config sets one).

        :param config: the new fault configuration.
        """
        self.injector.configure(config)
        self.tokens.lifetime = config.token_lifetime or self.options.token_lifetime
