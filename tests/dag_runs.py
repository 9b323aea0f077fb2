"""Run test DAGs with the real ``airflow dags test`` in subprocesses, and read their results from the DB.

One Airflow home is migrated once per session; every DAG run gets a copy of that migrated SQLite
database, so runs are independent and can go in parallel.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
DAGS_FOLDER = REPO / "tests" / "sensors" / "dags"
LOGICAL_DATE = "2024-01-01"

_TEMPLATE: Path | None = None


def _base_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        }
    )
    return env


def migrated_template() -> Path:
    """An Airflow home with a migrated database, made once per process."""
    global _TEMPLATE
    if _TEMPLATE is None:
        home = Path(tempfile.mkdtemp(prefix="quamotion-airflow-template-"))
        subprocess.run(
            [AIRFLOW, "db", "migrate"], env=_base_env(home), check=True, capture_output=True, timeout=120
        )
        _TEMPLATE = home
    return _TEMPLATE


@dataclass
class DagRun:
    """One ``airflow dags test`` run: its process, then its exit code, output and database."""

    dag_id: str
    home: Path
    results: Path
    process: subprocess.Popen[str] | None = None
    returncode: int | None = None
    output: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self, connection_json: str) -> DagRun:
        template = migrated_template()
        self.home.mkdir(parents=True, exist_ok=True)
        shutil.copy(template / "airflow.db", self.home / "airflow.db")
        env = _base_env(self.home)
        env["AIRFLOW_CONN_QUAMOTION_DEFAULT"] = connection_json
        env["QUAMOTION_TEST_RESULTS"] = str(self.results)
        env.update(self.extra_env)
        self.process = subprocess.Popen(
            [AIRFLOW, "dags", "test", self.dag_id, LOGICAL_DATE],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def wait(self, timeout: float = 120) -> DagRun:
        assert self.process is not None
        if self.returncode is None:
            try:
                self.output, _ = self.process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.output, _ = self.process.communicate()
                raise AssertionError(f"dags test {self.dag_id} timed out:\n{self.output[-4000:]}") from None
            self.returncode = self.process.returncode
        return self

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return list(db.execute(sql, args))

    def task_states(self) -> dict[str, tuple[str, int]]:
        """``{task_id: (state, try_number)}``."""
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ?", self.dag_id
        )
        return {task: (state, tries) for task, state, tries in rows}

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ?", self.dag_id, task_id, key
        )
        if not rows:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, str | bytes) else value

    def tail(self, n: int = 6000) -> str:
        return self.output[-n:]
