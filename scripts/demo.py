"""`make demo`: run the example DAGs against the sandbox with Airflow's embedded SQLite.

Starts the sandbox, runs example DAGs 1 (daily export) and 2 (nightly test run) with
`airflow dags test`, prints what was exported and where, and stops the sandbox. Safe to rerun:
every run starts from a fresh demo directory.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent
DAGS = [("quamotion_daily_export", "yesterday"), ("quamotion_nightly_test_run", "today")]


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def airflow(env: dict[str, str], *args: str, timeout: float = 600) -> None:
    started = time.monotonic()
    log = DEMO / "logs" / f"{'-'.join(args[:3]).replace('/', '_')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        result = subprocess.run(
            [str(BIN / "airflow"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    took = time.monotonic() - started
    if result.returncode != 0:
        print(log.read_text()[-6000:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {result.returncode}); full log: {log}")
    print(f"   airflow {' '.join(args)}: ok in {took:.1f} s (log: {log.relative_to(ROOT)})")


def show_exports(exports: Path, warehouse: Path) -> None:
    say("What was exported")
    files = sorted(p for p in exports.rglob("*") if p.is_file())
    for path in files:
        lines = path.read_bytes().count(b"\n") if path.suffix in (".jsonl", ".csv", ".log") else None
        size = path.stat().st_size
        print(
            f"   {path.relative_to(ROOT)}  ({size:,} bytes{f', {lines:,} lines' if lines is not None else ''})"
        )
    for path in [p for p in files if p.suffix == ".jsonl"][:1]:
        print(f"\n   first rows of {path.name}:")
        with path.open() as handle:
            for _, line in zip(range(2), handle, strict=False):
                print("   " + line.strip()[:160])
    if warehouse.exists():
        print(f"\n   SQLite warehouse {warehouse.relative_to(ROOT)}:")
        with sqlite3.connect(warehouse) as db:
            tables = [
                r[0] for r in db.execute("select name from sqlite_master where type='table' order by name")
            ]
            for table in tables:
                count = db.execute(f'select count(*) from "{table}"').fetchone()[0]  # noqa: S608 - our own table names
                print(f"     {table}: {count:,} rows")
                cursor = db.execute(f'select * from "{table}" limit 2')  # noqa: S608
                columns = [c[0] for c in cursor.description]
                for row in cursor:
                    print("       " + json.dumps(dict(zip(columns, row, strict=True)), default=str)[:160])


def main() -> None:
    from airflow_provider_quamotion.sandbox import Sandbox

    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir(parents=True)
    exports = DEMO / "exports"
    warehouse = DEMO / "warehouse.db"
    say("Starting the Quamotion Cloud sandbox")
    with Sandbox(DEMO / "sandbox", runs=500, seed=7, queue_seconds=2, run_seconds=4) as sandbox:
        print(f"   API {sandbox.api_url}, Azure AD {sandbox.authority_host}, CA {sandbox.ca_path}")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW_CONN_QUAMOTION_DEFAULT": sandbox.connection_json,
            "AIRFLOW_CONN_QUAMOTION_WAREHOUSE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)}),
            "AIRFLOW_VAR_QUAMOTION_EXPORT_BASE": str(exports),
            "AIRFLOW_VAR_QUAMOTION_APP_PATH": str(ROOT / "example_dags" / "files" / "Acquaint.apk"),
            "AIRFLOW_VAR_QUAMOTION_TEST_PACKAGE_PATH": str(
                ROOT / "example_dags" / "files" / "acquaint-tests.zip"
            ),
        }
        say("Preparing Airflow (embedded SQLite metadata database)")
        airflow(env, "db", "migrate")
        for dag_id, when in DAGS:
            day = date.today() - timedelta(days=1) if when == "yesterday" else date.today()
            say(f"Running {dag_id} for {day}")
            airflow(env, "dags", "test", dag_id, day.isoformat())
        show_exports(exports, warehouse)
        counters = sandbox.counters()
        say("Sandbox traffic")
        print(f"   {counters.get('requests')} API requests, {counters.get('tokens_issued')} tokens issued")
    say("Done: the sandbox is stopped. Everything the demo wrote is under .demo/")


if __name__ == "__main__":
    main()
