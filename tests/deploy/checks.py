"""What the deployment tests check in the daily export's outputs, against the sandbox's records."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from airflow_provider_quamotion.export.window import Window, parse_instant, utc_text
from airflow_provider_quamotion.sandbox import Sandbox
from tests.dag_runs import API_AND_SENSOR_TASKS, DAILY_EXPORT_TASKS
from tests.deploy.deployment import Deployment

DAILY = "quamotion_daily_export"
DAILY_TASKS = DAILY_EXPORT_TASKS
TABLES = {"test_runs": "quamotion_test_runs", "jobs": "quamotion_jobs"}
NIGHTLY = "quamotion_nightly_test_run"
API = "quamotion_api_and_sensor"
API_TASKS = API_AND_SENSOR_TASKS


def instant(value: str) -> dt.datetime:
    """An ISO timestamp (``Z`` or an offset, naive is UTC) as an aware datetime."""
    parsed = parse_instant(value)
    assert parsed is not None, value
    return parsed


def history_day(sandbox: Sandbox, days_back: int) -> str:
    """A day inside the sandbox's generated history."""
    anchor = dt.datetime.fromtimestamp(sandbox.settings.anchor, dt.timezone.utc)
    return (anchor - dt.timedelta(days=days_back)).strftime("%Y-%m-%d")


def read_jsonl(path: Path) -> list[Any]:
    """The records of a JSON lines file."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def expected(sandbox: Sandbox, resource: str, since: str, until: str) -> list[Any]:
    """What an export of ``resource`` over ``[since, until)`` must hold, in the API's order."""
    if resource == "test_runs":
        return list(sandbox.expected_test_runs(since, until))
    return list(sandbox.expected_jobs(since, until, run_id_key="testRunId"))


def warehouse_rows(deployment: Deployment, resource: str, since: str, until: str) -> list[Any]:
    """The rows of a window in the warehouse table of ``resource`` (the records, in load order)."""
    window = Window.of(since, until)
    assert window.since is not None and window.until is not None
    rows = deployment.warehouse_query(
        f'SELECT "_record" FROM "{TABLES[resource]}" '  # noqa: S608 - our table names
        'WHERE "_scheduled_utc" >= %s AND "_scheduled_utc" < %s ORDER BY ctid',
        utc_text(window.since),
        utc_text(window.until),
    )
    return [json.loads(r[0]) for r in rows]


def assert_succeeded(deployment: Deployment, dag_id: str, run_id: str, tasks: frozenset[str]) -> None:
    """The run and every one of ``tasks`` succeeded (with the failed tasks' logs otherwise)."""
    tis = deployment.task_instances(dag_id, run_id)
    states = {t: ti["state"] for t, ti in tis.items()}
    if states != dict.fromkeys(tasks, "success"):
        logs = "\n".join(
            f"--- {t} ---\n{deployment.task_log(dag_id, run_id, t, max(1, tis[t]['try_number']))[-3000:]}"
            for t, s in states.items()
            if s != "success"
        )
        raise AssertionError(f"{dag_id} {run_id}: {states}\n{logs}")
    assert deployment.dag_run(dag_id, run_id)["state"] == "success"


def check_daily_export(deployment: Deployment, run_id: str) -> tuple[str, str]:
    """A daily export run's files and rows equal the sandbox's records of its window; the window.

    The window is the one the run says it exported (its summaries in XCom); the partition is named
    after the window's first day.
    """
    sandbox = deployment.sandbox
    assert sandbox is not None
    assert_succeeded(deployment, DAILY, run_id, DAILY_TASKS)
    windows = set()
    for task in DAILY_TASKS:
        summary = deployment.xcom(DAILY, run_id, task)
        windows.add((summary["since"], summary["until"]))
    assert len(windows) == 1, windows  # the four tasks of a run export one window
    ((since, until),) = windows
    day = since[:10]
    for resource in TABLES:
        want = expected(sandbox, resource, since, until)
        assert want, (resource, since, until)
        folder = deployment.exports / resource / f"dt={day}"
        assert read_jsonl(folder / f"{resource}.jsonl") == want, (resource, since, until)
        assert sorted(p.name for p in folder.iterdir()) == [f"{resource}.jsonl"]  # no temporary file
        assert warehouse_rows(deployment, resource, since, until) == want, (resource, since, until)
    return since, until


def created_test_runs(sandbox: Sandbox, monkeypatch: Any) -> set[str]:
    """The ids of the test runs created through the sandbox's API so far (not its generated history).

    :param sandbox: the deployment's sandbox.
    :param monkeypatch: pytest's, to point ``quamotion_default`` at the sandbox in this process.
    """
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_DEFAULT", sandbox.connection_json)
    runs = QuamotionHook().list_test_runs()
    return {str(r["testRunId"]) for r in runs if sandbox.data.run_index(r["testRunId"]) is None}
