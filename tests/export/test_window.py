"""The window of a DAG run (``export_window`` macro): scheduled, manual with and without a date, backfill.

The example DAGs' templates are rendered here as Airflow renders them in the task (the DAG's template
environment: StrictUndefined and ``user_defined_macros``), from the context a run gets: a run
triggered without a date (``logical_date=None``) has no ``ds`` and no ``data_interval_start``.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from airflow_provider_quamotion.exceptions import QuamotionConfigError
from airflow_provider_quamotion.export import window as window_module
from airflow_provider_quamotion.export.window import Window, run_window
from tests.dag_runs import EXAMPLE_DAGS

UTC = dt.timezone.utc
RUN_AFTER = pendulum.datetime(2026, 12, 1, 23, 10, tz="UTC")


def load_dag(dag_id: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=EXAMPLE_DAGS, safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


@pytest.fixture(scope="module")
def daily() -> Any:
    return load_dag("quamotion_daily_export")


def dag_run(run_id: str, run_after: Any = RUN_AFTER, dag_id: str = "quamotion_daily_export") -> Any:
    return SimpleNamespace(run_after=run_after, run_id=run_id, dag_id=dag_id, logical_date=None)


class Vars:
    """``var.value`` of a template context."""

    def __init__(self, base: str) -> None:
        self.value = SimpleNamespace(get=lambda key, default=None: base)


def context_without_date(dag: Any, run_id: str, run_after: Any = RUN_AFTER) -> dict[str, Any]:
    """What a task of a run triggered without a logical date gets: no ds, no data interval."""
    return {
        "dag": dag,
        "dag_run": dag_run(run_id, run_after, dag.dag_id),
        "run_id": run_id,
        "var": Vars("/base"),
    }


def context_with_date(dag: Any, logical: dt.datetime, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    ctx = context_without_date(dag, f"manual__{logical.isoformat()}")
    ctx.update(
        logical_date=logical,
        ds=logical.strftime("%Y-%m-%d"),
        data_interval_start=pendulum.instance(start),
        data_interval_end=pendulum.instance(end),
    )
    return ctx


def render(dag: Any, task_id: str, ctx: dict[str, Any]) -> Any:
    task = dag.get_task(task_id).prepare_for_execution()
    task.render_template_fields(ctx, jinja_env=dag.get_template_env())
    return task


def test_the_data_interval_is_the_window() -> None:
    start, end = dt.datetime(2024, 1, 1, 2, tzinfo=UTC), dt.datetime(2024, 1, 2, 2, tzinfo=UTC)
    window = run_window({"data_interval_start": start, "data_interval_end": end, "dag_run": dag_run("x")})
    assert window == Window(start, end)
    assert window.day == "2024-01-01"


def test_without_a_date_the_last_complete_interval_is_exported_and_logged(
    daily: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=window_module.__name__):
        window = run_window({"dag": daily, "dag_run": dag_run("manual__no_date_1")})
        again = run_window({"dag": daily, "dag_run": dag_run("manual__no_date_1")})
    # 0 2 * * *: triggered at 23:10 on 12-01, the last complete day is 11-30 02:00 .. 12-01 02:00
    assert (
        window
        == again
        == Window(dt.datetime(2026, 11, 30, 2, tzinfo=UTC), dt.datetime(2026, 12, 1, 2, tzinfo=UTC))
    )
    messages = [r.getMessage() for r in caplog.records if "no logical date" in r.getMessage()]
    assert len(messages) == 1, messages  # said once per run, not once per rendered field
    assert "manual__no_date_1" in messages[0] and "2026-11-30T02:00:00+00:00" in messages[0]


def test_before_the_days_boundary_the_previous_day_is_the_last_complete_one(daily: Any) -> None:
    early = pendulum.datetime(2026, 12, 1, 1, 59, tz="UTC")
    window = run_window({"dag": daily, "dag_run": dag_run("manual__early", early)})
    assert window.iso() == ("2026-11-29T02:00:00+00:00", "2026-11-30T02:00:00+00:00")


def test_without_a_date_and_without_a_schedule_it_asks_for_an_explicit_window() -> None:
    dag = load_dag("quamotion_api_and_sensor")  # schedule=None
    with pytest.raises(QuamotionConfigError, match="since= and"):
        run_window({"dag": dag, "dag_run": dag_run("manual__none", dag_id=dag.dag_id)})


@pytest.mark.parametrize("storage_task", ["test_runs_to_storage", "jobs_to_storage"])
def test_daily_export_renders_without_a_logical_date(daily: Any, storage_task: str) -> None:
    ctx = context_without_date(daily, "manual__2026-12-01T23:10:00+00:00")
    task = render(daily, storage_task, ctx)
    resource = task.resource
    assert task.destination == f"/base/{resource}/dt=2026-11-30/{resource}.jsonl"
    assert Window.of(task.since, task.until).iso() == (
        "2026-11-30T02:00:00+00:00",
        "2026-12-01T02:00:00+00:00",
    )
    sql = render(daily, f"{resource}_to_warehouse", ctx)
    assert (sql.since, sql.until) == (task.since, task.until)


def test_daily_export_partition_is_named_from_the_window_not_the_logical_date(daily: Any) -> None:
    # A manual run dated 12-01 00:00: Airflow infers the interval 11-30 02:00 .. 12-01 02:00; ds is 12-01.
    logical = dt.datetime(2026, 12, 1, tzinfo=UTC)
    ctx = context_with_date(
        daily, logical, dt.datetime(2026, 11, 30, 2, tzinfo=UTC), dt.datetime(2026, 12, 1, 2, tzinfo=UTC)
    )
    task = render(daily, "test_runs_to_storage", ctx)
    assert task.destination == "/base/test_runs/dt=2026-11-30/test_runs.jsonl"
    assert Window.of(task.since, task.until).day == "2026-11-30"


def test_scheduled_and_backfill_runs_keep_their_interval(daily: Any) -> None:
    start = dt.datetime(2026, 11, 3, 2, tzinfo=UTC)
    ctx = context_with_date(daily, start, start, start + dt.timedelta(days=1))
    task = render(daily, "jobs_to_storage", ctx)
    assert task.destination == "/base/jobs/dt=2026-11-03/jobs.jsonl"
    assert Window.of(task.since, task.until).iso() == (
        "2026-11-03T02:00:00+00:00",
        "2026-11-04T02:00:00+00:00",
    )


def test_api_and_sensor_renders_without_a_logical_date() -> None:
    dag = load_dag("quamotion_api_and_sensor")
    task = render(dag, "all_test_runs_to_storage", context_without_date(dag, "manual__x"))
    assert task.output_path == "/base/raw/2026-12-01/testRun.json"


def test_nightly_artifacts_have_a_tree_of_their_own() -> None:
    dag = load_dag("quamotion_nightly_test_run")
    ctx = context_without_date(dag, "manual__y")
    ctx["ti"] = SimpleNamespace(xcom_pull=lambda task_ids=None, **kw: "run-42")
    save = render(dag, "save_logs_and_artifacts", ctx)
    jobs = render(dag, "export_run_jobs", ctx)
    assert save.destination == "/base/test_run_artifacts/run-42"
    assert jobs.destination == "/base/test_run_artifacts/run-42/jobs.jsonl"
    assert not Path(save.destination).is_relative_to("/base/test_runs")


def test_every_example_dag_template_avoids_logical_date_fields() -> None:
    for path in EXAMPLE_DAGS.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        for name in ("{{ ds", "{{ data_interval_", "{{ logical_date", "{{ ts"):
            assert name not in text, f"{path.name} uses {name} (undefined when triggered without a date)"
