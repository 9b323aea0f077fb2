"""Every log line, XCom, serialized trigger and trigger event of real flows is free of secrets and tokens."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_quamotion import api
from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator
from airflow_provider_quamotion.sandbox import Sandbox
from airflow_provider_quamotion.triggers.quamotion import QuamotionHttpTrigger, QuamotionTestRunTrigger
from tests.security.conftest import cached_tokens, leaks


def test_the_scanner_finds_what_it_looks_for(sandbox_conn: Sandbox) -> None:
    token = QuamotionHook().get_token()
    assert leaks(f"Authorization: Bearer {token}", []) != []
    assert leaks(f"x{sandbox_conn.client_secret}y", [sandbox_conn.client_secret]) != []
    assert leaks(b"api_key=" + sandbox_conn.api_key.encode(), [sandbox_conn.api_key]) != []
    assert leaks("nothing to see", [sandbox_conn.client_secret]) == []


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [dict(event.payload) async for event in trigger.run()]


def test_hook_export_and_trigger_flows_leak_nothing(
    sandbox_conn: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    sb = sandbox_conn
    caplog.set_level(logging.DEBUG)
    for name in ("msal", "urllib3", "aiohttp", "airflow_provider_quamotion", "airflow"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    tokens: set[str] = set()
    xcoms: list[Any] = []
    serialized: list[Any] = []
    events: list[Any] = []

    # Client credentials: calls, a download, a 401 renewal after a revocation.
    hook = QuamotionHook()
    xcoms.append(hook.get_version())
    runs = hook.list_test_runs()
    hook.download_job_log(next(sb.expected_jobs())[api.JOB_ID], tmp_path / "job.log")
    tokens |= cached_tokens()
    sb.revoke_tokens()
    xcoms.append(len(hook.list_jobs(runs[0][api.TEST_RUN_ID])))
    tokens |= cached_tokens()
    hook.close()

    # The operators: XCom values of a call and of two exports.
    xcoms.append(QuamotionApiOperator(task_id="v", endpoint="/api/version").execute(context={}))
    for resource, fmt in (("test_runs", "jsonl"), ("jobs", "csv")):
        operator = QuamotionExportOperator(
            task_id=resource, resource=resource, destination=str(tmp_path / f"{resource}.{fmt}"), format=fmt
        )
        xcoms.append(operator.execute(context={}))
    tokens |= cached_tokens()

    # Triggers: serialize() and their events, one of them an error.
    run_id = runs[1][api.TEST_RUN_ID]
    for trigger in (
        QuamotionTestRunTrigger(run_id, poll_interval=0.1, deadline=time.time() + 30),
        QuamotionTestRunTrigger("no-such-run", poll_interval=0.1, deadline=time.time() + 30),
        QuamotionHttpTrigger("/api/version", poll_interval=0.1, deadline=time.time() + 30),
    ):
        serialized.append(trigger.serialize())
        events.extend(asyncio.run(_events(trigger)))
    tokens |= cached_tokens()

    # The API key flow, and a refused secret (an error message).
    conn = json.loads(sb.connection_json)
    conn["login"] = conn["password"] = None
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_KEYED", json.dumps(conn))
    keyed = QuamotionHook("quamotion_keyed")
    xcoms.append(keyed.get_version())
    tokens |= cached_tokens()
    wrong = json.loads(sb.connection_json)
    wrong["password"] = sb.client_secret + "-but-wrong"
    monkeypatch.setenv("AIRFLOW_CONN_QUAMOTION_WRONG", json.dumps(wrong))
    errors = [str(QuamotionHook("quamotion_wrong").test_connection())]

    secrets = [sb.client_secret, sb.api_key, sb.client_secret + "-but-wrong", *tokens]
    assert len(tokens) >= 3, "the flows should have used several tokens (renewal, API key login)"
    assert sb.counters()["status"].get("401", 0) >= 1, "the revocation should have forced a renewal"
    records = caplog.records
    assert len(records) > 20, "DEBUG logging should have captured the flows"
    log_text = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {r.__dict__.get('args')!r}"
        for r in records
    )
    out, err = capfd.readouterr()
    assert "GET /project/sandbox/api/testRun" in log_text  # the scan sees the request logs
    assert {e["status"] for e in events} == {"success", "error"}
    for what, text in (
        ("logs", log_text),
        ("stdout", out),
        ("stderr", err),
        ("xcom", json.dumps(xcoms, default=str)),
        ("serialized triggers", json.dumps(serialized, default=str)),
        ("trigger events", json.dumps(events, default=str)),
        ("error messages", "\n".join(errors)),
    ):
        assert leaks(text, secrets) == [], f"{what} leak"


LEAK_DAG = textwrap.dedent(
    """
    from datetime import datetime

    from airflow.sdk import dag, task

    from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator, QuamotionExportOperator
    from airflow_provider_quamotion.sensors.quamotion import QuamotionTestRunSensor


    @dag(schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
    def quamotion_leak_check():
        version = QuamotionApiOperator(task_id="version", endpoint="/api/version")
        export = QuamotionExportOperator(task_id="export", resource="jobs", destination={out!r})

        @task
        def start() -> str:
            from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

            hook = QuamotionHook()
            app = next(a for a in hook.list_applications() if a["operatingSystem"] == "Android")
            run = hook.start_test_run(app, hook.list_test_packages()[0], "physical-android-8")
            return run["testRunId"]

        run_id = start()
        wait = QuamotionTestRunSensor(
            task_id="wait", test_run_id=run_id, deferrable=True, poke_interval=0.5, timeout=120
        )
        version >> export >> run_id >> wait


    quamotion_leak_check()
    """
)


#: Airflow 3.3's task supervisor logs, at DEBUG, each message a task sends it, and so echoes the value
#: of every ``mask_secret`` call (Airflow's own for the connection's password, the provider's for its
#: tokens): ``Sending request ... msg=MaskSecret(value='...')``. That line is Airflow's, not the
#: provider's; every other line of the run is scanned.
UPSTREAM_MASK_SECRET_ECHO = re.compile(r"\[debug\s*\] Sending request .*msg=MaskSecret\(value=")


def test_airflow_dags_test_leaves_no_secret_in_logs_xcom_or_database(
    sandbox_conn: Sandbox, tmp_path: Path
) -> None:
    sb = sandbox_conn
    home, dags = tmp_path / "airflow-home", tmp_path / "dags"
    dags.mkdir()
    (dags / "leak_check.py").write_text(LEAK_DAG.format(out=str(tmp_path / "jobs.jsonl")))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": (
            "airflow_provider_quamotion=DEBUG msal=DEBUG urllib3=DEBUG aiohttp=DEBUG"
        ),
        "AIRFLOW_CONN_QUAMOTION_DEFAULT": sb.connection_json,
    }
    airflow = str(Path(sys.executable).parent / "airflow")
    outputs = []
    for args in (["db", "migrate"], ["dags", "test", "quamotion_leak_check"]):
        proc = subprocess.run(
            [airflow, *args], env=env, capture_output=True, text=True, timeout=240, check=False, cwd=tmp_path
        )
        outputs.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    with sqlite3.connect(home / "airflow.db") as db:
        states = dict(db.execute("select task_id, state from task_instance").fetchall())
        xcom_count = db.execute("select count(*) from xcom").fetchone()[0]
    assert states == {"version": "success", "export": "success", "start": "success", "wait": "success"}
    assert xcom_count >= 3
    assert sb.counters()["tokens_issued"] >= 1
    assert "jobs rows to file://" in outputs[1], "the task logs should be in the output scanned"
    # the libraries' DEBUG records are in what is scanned (aiohttp, the async client, logs no
    # request at DEBUG; its loggers pass the same redactor)
    for library in ("urllib3", "msal"):
        assert f"[{library}" in outputs[1], f"{library}'s log records should be in the output scanned"
    scanned = [p for p in home.rglob("*") if p.is_file()]
    secrets = [sb.client_secret, sb.api_key]
    for text in outputs:
        lines = [line for line in text.splitlines() if not UPSTREAM_MASK_SECRET_ECHO.search(line)]
        assert leaks("\n".join(lines), secrets) == [], "airflow CLI output leak"
    for path in scanned:
        assert leaks(path.read_bytes(), secrets) == [], f"leak in {path.relative_to(home)}"
