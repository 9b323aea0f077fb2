"""The deployment tests' fixtures: one production-shaped Airflow for the session (:mod:`tests.deploy.deployment`).

A test file added to ``tests/deploy/`` gets, without more code:

* ``deployment``: the running :class:`~tests.deploy.deployment.Deployment` (scheduler, dag-processor,
  triggerer, Celery worker, api-server, PostgreSQL, Redis, the sandbox). Its DAGs are the example DAGs
  and every ``tests/deploy/dags/*.py``. Use ``deployment.unpause(dag_id)``, ``deployment.trigger(dag_id,
  logical_date=None)``, ``deployment.wait_for_dag_run(dag_id, run_id)``, ``deployment.restart("triggerer")``
  (SIGKILL then start), ``deployment.kill(name)``/``deployment.start_service(name)``,
  ``deployment.wait_for_job("TriggererJob", after)``, ``deployment.skip_retry_delay(dag_id, run_id, delay)``,
  ``deployment.sandbox`` (faults, counters, expected records), ``deployment.meta_query(sql)``.
* ``deploy_sandbox``: the deployment's sandbox without faults (cleared again after the test).

Every test here is marked ``deploy`` (``make test-deploy`` runs them; the main ``pytest`` run leaves
them out). The deployment stops when the session ends, also after a failure or Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_quamotion.sandbox import Sandbox
from tests.deploy.deployment import Deployment

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder ``deploy``."""
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.deploy)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The running deployment, for the whole session; stopped (every service, by its id) at its end."""
    deploy = Deployment(tmp_path_factory.mktemp("deployment"))
    try:
        deploy.start()
        yield deploy
    finally:
        deploy.stop()


@pytest.fixture
def deploy_sandbox(deployment: Deployment) -> Iterator[Sandbox]:
    """The deployment's sandbox, without faults for the test."""
    assert deployment.sandbox is not None
    deployment.sandbox.clear_faults()
    yield deployment.sandbox
    deployment.sandbox.clear_faults()
