"""Unit tests of QuamotionApiOperator and QuamotionExportOperator with requests-mock."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock as rm

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import QuamotionApiError, QuamotionConfigError, QuamotionError
from airflow_provider_quamotion.operators.quamotion import (
    QuamotionApiOperator,
    QuamotionExportOperator,
    QuamotionXComTooLargeError,
)
from airflow_provider_quamotion.storage import TEMP_MARKER
from tests.mocks import HOST, aiohttp_through, mock_aad, mock_projects

ROOT = f"{HOST}/project/acme/api/"


pytestmark = pytest.mark.usefixtures("mocked_connection")


@pytest.fixture
def m() -> Any:
    with rm.Mocker() as mocker, aiohttp_through(mocker):
        mock_aad(mocker)
        mock_projects(mocker)
        yield mocker


def api_calls(mocker: Any, method: str, path: str) -> int:
    return sum(1 for r in mocker.request_history if r.method == method and r.path == path.lower())


# --- QuamotionApiOperator ---------------------------------------------------------------------------


def test_api_get_json_with_query_params_and_headers(m: Any) -> None:
    m.get(ROOT + "testRun", json=[{"testRunId": "a"}])
    op = QuamotionApiOperator(
        task_id="t", endpoint="testRun", query_params={"x": "1"}, headers={"X-Trace": "abc"}
    )
    assert op.execute({}) == [{"testRunId": "a"}]
    last = m.last_request
    assert last.qs == {"x": ["1"]}
    assert last.headers["X-Trace"] == "abc"
    assert last.headers["Authorization"].startswith("Bearer ")


def test_api_host_root_endpoint_and_text_reply(m: Any) -> None:
    m.get(f"{HOST}/api/version", text="1.2.3", headers={"Content-Type": "text/plain"})
    assert QuamotionApiOperator(task_id="t", endpoint="/api/version").execute({}) == "1.2.3"
    m.get(ROOT + "job/7/log", text="line 1\nline 2\n", headers={"Content-Type": "text/plain; charset=utf-8"})
    assert QuamotionApiOperator(task_id="t", endpoint="job/7/log").execute({}) == "line 1\nline 2\n"
    m.get(ROOT + "job/8/log", text="{not json", headers={"Content-Type": "application/json"})
    assert QuamotionApiOperator(task_id="t", endpoint="job/8/log").execute({}) == "{not json"
    m.delete(ROOT + "schedule/3", status_code=204)
    assert QuamotionApiOperator(task_id="t", endpoint="schedule/3", method="delete").execute({}) is None


def test_api_post_json_body_and_response_filter(m: Any) -> None:
    m.post(ROOT + "testRun", json={"testRunId": "r1", "jobs": [], "big": "x" * 100_000})
    op = QuamotionApiOperator(
        task_id="t",
        endpoint="testRun",
        method="POST",
        json={"schedule": ""},
        response_filter=lambda r: r.json()["testRunId"],
    )
    assert op.execute({}) == "r1"
    assert m.last_request.json() == {"schedule": ""}


def test_api_xcom_guard_refuses_large_reply_without_reading_it_all(m: Any) -> None:
    m.get(ROOT + "testRun", json=[{"testRunId": str(i)} for i in range(10_000)])
    op = QuamotionApiOperator(task_id="t", endpoint="testRun")
    with pytest.raises(QuamotionXComTooLargeError) as err:
        op.execute({})
    message = str(err.value)
    assert "destination=" in message and "QuamotionExportOperator" in message and "65536" in message
    # the guard is configurable, and None turns it off
    assert (
        len(QuamotionApiOperator(task_id="t", endpoint="testRun", max_xcom_bytes=None).execute({})) == 10_000
    )
    with pytest.raises(QuamotionXComTooLargeError):
        QuamotionApiOperator(task_id="t", endpoint="testRun", max_xcom_bytes=100).execute({})


def test_api_xcom_guard_applies_to_filtered_value(m: Any) -> None:
    m.get(ROOT + "testRun", json=[{"testRunId": str(i)} for i in range(50)])
    small = QuamotionApiOperator(
        task_id="t", endpoint="testRun", max_xcom_bytes=20, response_filter=lambda r: len(r.json())
    )
    assert small.execute({}) == 50
    big = QuamotionApiOperator(
        task_id="t", endpoint="testRun", max_xcom_bytes=20, response_filter=lambda r: r.json()
    )
    with pytest.raises(QuamotionXComTooLargeError):
        big.execute({})


def test_api_destination_streams_atomically(m: Any, tmp_path: Path) -> None:
    body = b"PK\x03\x04" + os.urandom(300_000)
    m.get(ROOT + "job/5/artifacts", content=body, headers={"Content-Type": "application/zip"})
    target = tmp_path / "out" / "artifacts.zip"
    op = QuamotionApiOperator(task_id="t", endpoint="job/5/artifacts", destination=str(target))
    assert op.execute({}) == f"file://{target}"
    assert target.read_bytes() == body
    # a failed call leaves nothing behind, and an existing file as it was
    m.get(ROOT + "job/6/artifacts", status_code=404, text="no such job")
    failing = QuamotionApiOperator(task_id="t", endpoint="job/6/artifacts", destination=str(target))
    with pytest.raises(QuamotionApiError):
        failing.execute({})
    assert target.read_bytes() == body
    assert [p.name for p in target.parent.iterdir()] == ["artifacts.zip"]


def test_api_destination_accepts_object_storage_path(m: Any, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    m.post(ROOT + "report", json={"ok": True})
    target = ObjectStoragePath(f"file://{tmp_path}/reports/report.json")
    op = QuamotionApiOperator(task_id="t", endpoint="report", method="POST", json={}, destination=target)
    assert op.execute({}) == f"file://{tmp_path}/reports/report.json"
    assert json.loads((tmp_path / "reports" / "report.json").read_text()) == {"ok": True}
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["report.json"]
    assert m.last_request.method == "POST"


@pytest.mark.parametrize("method", ["POST", "DELETE", "PATCH"])
def test_non_idempotent_call_answered_503_is_not_repeated(m: Any, sleeps: list[float], method: str) -> None:
    m.register_uri(method, ROOT + "schedule/9", status_code=503, headers={"Retry-After": "0"})
    op = QuamotionApiOperator(task_id="t", endpoint="schedule/9", method=method)
    with pytest.raises(QuamotionApiError, match="503"):
        op.execute({})
    assert api_calls(m, method, "/project/acme/api/schedule/9") == 1
    assert sleeps == []


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_non_idempotent_call_dropped_after_sending_is_not_repeated(
    m: Any, sleeps: list[float], method: str
) -> None:
    m.register_uri(method, ROOT + "testRun", exc=requests.exceptions.ConnectionError("connection reset"))
    op = QuamotionApiOperator(task_id="t", endpoint="testRun", method=method)
    with pytest.raises(QuamotionApiError, match="ConnectionError"):
        op.execute({})
    assert api_calls(m, method, "/project/acme/api/testRun") == 1


def test_post_is_retried_when_certainly_not_processed(m: Any, sleeps: list[float]) -> None:
    m.post(
        ROOT + "testRun",
        [
            {"status_code": 429, "headers": {"Retry-After": "0"}},
            {"exc": requests.exceptions.ConnectTimeout("connect timeout")},
            {"json": {"testRunId": "r"}},
        ],
    )
    assert QuamotionApiOperator(task_id="t", endpoint="testRun", method="POST").execute({}) == {
        "testRunId": "r"
    }
    assert api_calls(m, "POST", "/project/acme/api/testRun") == 3


def test_get_answered_503_is_retried(m: Any, sleeps: list[float]) -> None:
    m.get(ROOT + "deviceGroup", [{"status_code": 503, "headers": {"Retry-After": "0"}}, {"json": []}])
    assert QuamotionApiOperator(task_id="t", endpoint="deviceGroup").execute({}) == []
    assert api_calls(m, "GET", "/project/acme/api/deviceGroup") == 2


def test_api_operator_init_is_offline_and_validates() -> None:
    with rm.Mocker() as mocker:  # no route: any request would raise NoMockAddress
        op = QuamotionApiOperator(task_id="t", endpoint="testRun", destination="/tmp/x.json")
        assert not mocker.called
    assert set(op.template_fields) == {
        "endpoint",
        "query_params",
        "json",
        "data",
        "headers",
        "destination",
        "quamotion_conn_id",
    }
    with pytest.raises(QuamotionConfigError, match="cannot be combined"):
        QuamotionApiOperator(task_id="t", endpoint="x", destination="/tmp/x", response_filter=lambda r: 1)


def test_api_output_path_is_the_deprecated_name_of_destination() -> None:
    from airflow.exceptions import AirflowProviderDeprecationWarning

    with pytest.warns(AirflowProviderDeprecationWarning, match="use destination="):
        op = QuamotionApiOperator(task_id="t", endpoint="testRun", output_path="/tmp/x.json")
    assert op.destination == op.output_path == "/tmp/x.json"
    with pytest.raises(QuamotionConfigError, match="destination= only"):
        QuamotionApiOperator(task_id="t", endpoint="testRun", output_path="/a", destination="/b")


def test_api_headers_rendered_to_a_string_are_refused_clearly(m: Any) -> None:
    op = QuamotionApiOperator(task_id="t", endpoint="testRun", headers="{'X-Trace': '1'}")  # type: ignore[arg-type]
    with pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        op.execute({})


def test_operator_module_import_is_light() -> None:
    code = (
        "import sys, airflow.sdk\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_quamotion.operators.quamotion\n"
        "heavy = ['requests', 'ijson', 'pyarrow', 'msal', 'httpx', 'aiohttp',\n"
        "         'airflow_provider_quamotion.hooks.quamotion', 'airflow_provider_quamotion.transport',\n"
        "         'airflow_provider_quamotion.export.runner']\n"
        "print([m for m in heavy if m in sys.modules and m not in before])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


# --- QuamotionExportOperator ------------------------------------------------------------------------

RUNS = [
    {"testRunId": "r1", "scheduled": "2024-01-01T23:59:59+00:00", "appId": "a", "jobs": []},
    {"testRunId": "r2", "scheduled": "2024-01-02T00:00:00+00:00", "appId": "b", "jobs": []},
    {"testRunId": "r3", "scheduled": "2024-01-02T10:00:00", "appId": "c", "jobs": []},  # no offset: UTC
    {"testRunId": "r4", "scheduled": "2024-01-02T23:30:00-01:00", "appId": "d", "jobs": []},  # = 01-03 00:30Z
    {"testRunId": "r5", "scheduled": "2024-01-03T00:00:00Z", "appId": "e", "jobs": []},
]


def jobs_of(run_id: str) -> list[dict[str, Any]]:
    n = int(run_id[1:])
    return [
        {"id": n * 10 + k, "name": f"dev-{k}", "status": "success", "duration": 1.5, "hasArtifacts": True}
        for k in range(n % 3 + 1)
    ]


@pytest.fixture
def runs_api(m: Any) -> Any:
    m.get(ROOT + "testRun", json=RUNS)
    for run in RUNS:
        m.get(ROOT + api.test_run_jobs(run["testRunId"]), json=jobs_of(run["testRunId"]))
    return m


def read_jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_test_runs_jsonl_window(runs_api: Any, tmp_path: Path) -> None:
    target = tmp_path / "dt=2024-01-02" / "test_runs.jsonl"
    op = QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(target), since="2024-01-02", until="2024-01-03"
    )
    summary = op.execute({})
    assert [r["testRunId"] for r in read_jsonl(target)] == ["r2", "r3"]
    assert read_jsonl(target)[0] == RUNS[1]
    assert summary == {
        "destination": f"file://{target}",
        "rows": 2,
        "since": "2024-01-02T00:00:00+00:00",
        "until": "2024-01-03T00:00:00+00:00",
        "resource": "test_runs",
    }
    # offsets are honoured: 2024-01-02T23:30-01:00 is 2024-01-03T00:30Z
    QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(target), since="2024-01-03T00:00:00+00:00"
    ).execute({})
    assert [r["testRunId"] for r in read_jsonl(target)] == ["r4", "r5"]


def test_export_jobs_adds_run_id_and_keeps_run_order(runs_api: Any, tmp_path: Path) -> None:
    target = tmp_path / "jobs.jsonl"
    summary = QuamotionExportOperator(
        task_id="t", resource="jobs", destination=str(target), max_concurrency=3
    ).execute({})
    expected = [{"testRunId": r["testRunId"], **j} for r in RUNS for j in jobs_of(r["testRunId"])]
    assert read_jsonl(target) == expected
    assert next(iter(read_jsonl(target)[0])) == "testRunId"
    assert summary["rows"] == len(expected)


def test_export_jobs_window_only_fetches_runs_in_window(runs_api: Any, tmp_path: Path) -> None:
    QuamotionExportOperator(
        task_id="t",
        resource="jobs",
        destination=str(tmp_path / "jobs.jsonl"),
        since="2024-01-02T00:00:00Z",
        until="2024-01-02T12:00:00Z",
    ).execute({})
    fetched = sorted(r.path for r in runs_api.request_history if r.path.endswith("/jobs"))
    assert fetched == ["/project/acme/api/testrun/r2/jobs", "/project/acme/api/testrun/r3/jobs"]
    assert {r["testRunId"] for r in read_jsonl(tmp_path / "jobs.jsonl")} == {"r2", "r3"}


def test_export_csv_stable_columns_and_nested_json(m: Any, tmp_path: Path) -> None:
    groups = [
        {
            "deviceGroupId": "g1",
            "name": "n1",
            "displayName": "D 1",
            "devices": [{"tags": ["a"]}],
            "variables": {},
        },
        {"name": "n2", "deviceGroupId": "g2", "extra": "dropped", "devices": [], "variables": {"k": "v"}},
    ]
    m.get(ROOT + "deviceGroup", json=groups)
    target = tmp_path / "groups.csv"
    QuamotionExportOperator(
        task_id="t", resource="device_groups", destination=str(target), format="csv"
    ).execute({})
    with target.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(api.DEVICE_GROUP_FIELDS)
    assert rows[1] == ["g1", "n1", "D 1", '[{"tags":["a"]}]', "{}"]
    assert rows[2] == ["g2", "n2", "", "[]", '{"k":"v"}']
    # fields= chooses and orders the columns
    QuamotionExportOperator(
        task_id="t", resource="device_groups", destination=str(target), format="csv", fields=["name", "extra"]
    ).execute({})
    with target.open(newline="") as f:
        assert list(csv.reader(f)) == [["name", "extra"], ["n1", ""], ["n2", "dropped"]]


def test_export_parquet_types(runs_api: Any, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    target = tmp_path / "jobs.parquet"
    QuamotionExportOperator(
        task_id="t", resource="jobs", destination=str(target), format="parquet", batch_size=2
    ).execute({})
    table = pq.read_table(target)
    assert table.column_names == list(api.JOB_FIELDS)
    assert str(table.schema.field("id").type) == "int64"
    assert str(table.schema.field("duration").type) == "double"
    assert str(table.schema.field("hasArtifacts").type) == "bool"
    assert table.column("testRunId").to_pylist()[:3] == ["r1", "r1", "r2"]  # r1 has 2 jobs
    assert table.num_rows == sum(len(jobs_of(r["testRunId"])) for r in RUNS)


def test_export_endpoint_with_record_path(m: Any, tmp_path: Path) -> None:
    m.get(ROOT + "custom", json={"meta": {"n": 2}, "data": {"items": [{"a": 1}, {"a": 2, "b": [1]}]}})
    target = tmp_path / "custom.csv"
    summary = QuamotionExportOperator(
        task_id="t", endpoint="custom", record_path="data.items", destination=str(target), format="csv"
    ).execute({})
    assert summary["resource"] == "custom" and summary["rows"] == 2
    assert target.read_text().splitlines() == ["a", "1", "2"]  # columns from the first record


def test_failed_export_leaves_no_file_and_keeps_the_old_one(runs_api: Any, tmp_path: Path) -> None:
    target = tmp_path / "jobs.jsonl"
    target.write_text("previous\n")
    runs_api.get(ROOT + api.test_run_jobs("r4"), status_code=404, text="gone")
    op = QuamotionExportOperator(task_id="t", resource="jobs", destination=str(target))
    with pytest.raises(QuamotionApiError, match="404"):
        op.execute({})
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["jobs.jsonl"]


def test_interrupted_export_leaves_nothing(
    runs_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook

    real = QuamotionAsyncHook.list_jobs

    async def interrupted(self: QuamotionAsyncHook, run_id: str, **kwargs: Any) -> list[dict[str, Any]]:
        if run_id == "r3":
            raise KeyboardInterrupt  # on the fan-out's event loop: carried to the export's thread
        return await real(self, run_id, **kwargs)

    monkeypatch.setattr(QuamotionAsyncHook, "list_jobs", interrupted)
    target = tmp_path / "out" / "jobs.csv"
    with pytest.raises(KeyboardInterrupt):
        QuamotionExportOperator(task_id="t", resource="jobs", destination=str(target), format="csv").execute(
            {}
        )
    assert not any(TEMP_MARKER in p.name for p in target.parent.iterdir())
    assert not target.exists()
    assert not [t for t in threading.enumerate() if t.name == "quamotion-export"]  # its loop stopped


def test_export_to_sqlite_replaces_window_in_one_transaction(
    runs_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    db = tmp_path / "w.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)}))

    def export(since: str | None, until: str | None) -> dict[str, Any]:
        return QuamotionExportOperator(
            task_id="t", resource="jobs", sql_conn_id="warehouse", table="qm_jobs", since=since, until=until
        ).execute({})

    def rows() -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as c:
            return c.execute(
                'SELECT "testRunId", "id", "_scheduled_utc" FROM qm_jobs ORDER BY "id"'
            ).fetchall()

    assert export("2024-01-02", "2024-01-03")["destination"] == "qm_jobs"
    day2 = rows()
    assert {r[0] for r in day2} == {"r2", "r3"}
    assert export("2024-01-02", "2024-01-03")["rows"] == len(day2)
    assert rows() == day2  # rerun: same rows, no duplicates
    export("2024-01-03", None)
    assert {r[0] for r in rows()} == {"r2", "r3", "r4", "r5"}  # another window: day 2 untouched
    with sqlite3.connect(db) as c:
        record = json.loads(c.execute('SELECT "_record" FROM qm_jobs WHERE "id" = \'20\'').fetchone()[0])
    assert record == {"testRunId": "r2", **jobs_of("r2")[0]}
    # a failure in the middle rolls everything back, the delete included
    before = rows()
    runs_api.get(ROOT + api.test_run_jobs("r5"), status_code=404, text="boom")
    with pytest.raises(QuamotionApiError):
        export(None, None)
    assert rows() == before
    # a failed first load does not even leave the table behind
    with pytest.raises(QuamotionApiError):
        QuamotionExportOperator(task_id="t", resource="jobs", sql_conn_id="warehouse", table="fresh").execute(
            {}
        )
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT name FROM sqlite_master WHERE name = 'fresh'").fetchall() == []


def test_openlineage_facets(runs_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    op = QuamotionExportOperator(task_id="t", resource="test_runs", destination=str(tmp_path / "r.jsonl"))
    op.execute({})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("quamotion://cloud.quamotion.mobi", "acme/test_runs")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(tmp_path / "r.jsonl"))]
    monkeypatch.setenv("AIRFLOW_CONN_PG", "postgresql://u@db.example:5432/analytics")
    sql = QuamotionExportOperator(task_id="t", resource="jobs", sql_conn_id="pg", table="raw.jobs")
    assert [(d.namespace, d.name) for d in sql.get_openlineage_facets_on_complete(None).outputs] == [
        ("postgres://db.example:5432", "analytics.raw.jobs")
    ]
    s3 = QuamotionExportOperator(task_id="t", resource="jobs", destination="s3://lake/q/jobs.jsonl")
    assert [(d.namespace, d.name) for d in s3.get_openlineage_facets_on_complete(None).outputs] == [
        ("s3://lake", "q/jobs.jsonl")
    ]
    with_conn = QuamotionExportOperator(
        task_id="t", resource="jobs", destination="s3://aws_default@lake/q/jobs.jsonl"
    )  # the connection id is how Airflow reaches the store, not part of the dataset
    assert [(d.namespace, d.name) for d in with_conn.get_openlineage_facets_on_complete(None).outputs] == [
        ("s3://lake", "q/jobs.jsonl")
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "nope", "destination": "/tmp/x"}, "Unknown resource"),
        ({"resource": "jobs"}, "Nothing to export to"),
        ({"resource": "jobs", "destination": "/tmp/x", "table": "t", "sql_conn_id": "c"}, "not both"),
        ({"resource": "jobs", "endpoint": "x", "destination": "/tmp/x"}, "not both"),
        ({"resource": "jobs", "destination": "/tmp/x", "format": "xml"}, "format"),
        ({"resource": "jobs", "destination": "/tmp/x", "max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_export_operator_validates_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(QuamotionConfigError, match=message):
        QuamotionExportOperator(task_id="t", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resource": "applications", "since": "2024-01-01"}, "since/until"),
        ({"resource": "test_runs", "since": "yesterday"}, "ISO 8601"),
        ({"resource": "test_runs", "since": "2024-01-02", "until": "2024-01-01"}, "before since"),
        ({"resource": "{{ params.r }}"}, "Unknown resource"),  # templated: checked at run time
    ],
)
def test_export_operator_validates_at_run_time(
    m: Any, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    op = QuamotionExportOperator(task_id="t", destination=str(tmp_path / "x.jsonl"), **kwargs)
    with pytest.raises(QuamotionConfigError, match=message):
        op.execute({})
    assert not (tmp_path / "x.jsonl").exists()


def test_jobs_fan_out_is_concurrent_bounded_and_ordered(
    m: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import aiohttp

    runs = [{"testRunId": f"r{i}", "scheduled": "2024-01-01T00:00:00Z"} for i in range(40)]
    m.get(ROOT + "testRun", json=runs)
    for i in range(40):
        m.get(ROOT + api.test_run_jobs(f"r{i}"), json=[{"id": i, "status": "success"}])
    active = 0
    peak = 0
    sessions: set[int] = set()
    mocked = aiohttp.ClientSession.request  # the requests-mock bridge of the `m` fixture

    async def slow(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        nonlocal active, peak
        sessions.add(id(self))
        active += 1
        peak = max(peak, active)
        try:
            run = int(str(url).rsplit("/", 2)[-2][1:])
            await asyncio.sleep(0.01 if run % 2 else 0.03)  # answers come back out of order
            return await mocked(self, method, url, **kwargs)
        finally:
            active -= 1

    monkeypatch.setattr(aiohttp.ClientSession, "request", slow)
    target = tmp_path / "jobs.jsonl"
    QuamotionExportOperator(task_id="t", resource="jobs", destination=str(target), max_concurrency=4).execute(
        {}
    )
    assert [r["id"] for r in read_jsonl(target)] == list(range(40))
    assert peak == 4  # max_concurrency requests on the wire, never more
    assert len(sessions) == 1  # one pool: one token, one connection pool


def test_parse_errors_of_export_are_typed(m: Any, tmp_path: Path) -> None:
    m.get(ROOT + "testRun", text="<html>oops</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(QuamotionError):
        QuamotionExportOperator(task_id="t", resource="test_runs", destination=str(tmp_path / "x")).execute(
            {}
        )
    assert list(tmp_path.iterdir()) == []


# --- hook_settings ----------------------------------------------------------------------------------


def test_api_operator_hook_settings_reach_the_hook(m: Any, sleeps: list[float]) -> None:
    m.get(ROOT + "deviceGroup", status_code=503, headers={"Retry-After": "0"})
    op = QuamotionApiOperator(
        task_id="t", endpoint="deviceGroup", hook_params={"retry": {"max_attempts": 2}, "timeout": 7}
    )
    hook = op.get_hook()
    assert (hook.settings.retry.max_attempts, hook.settings.timeout) == (2, 7.0)
    with pytest.raises(QuamotionApiError, match="503"):
        op.execute({})
    assert api_calls(m, "GET", "/project/acme/api/deviceGroup") == 2  # not the default 6 attempts


def test_export_operator_hook_settings_reach_the_hook(
    m: Any, sleeps: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook
    from airflow_provider_quamotion.settings import RetryPolicy

    made: list[QuamotionHook] = []
    original_init = QuamotionHook.__init__

    def recording_init(self: QuamotionHook, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(QuamotionHook, "__init__", recording_init)
    m.get(ROOT + "testRun", status_code=503, headers={"Retry-After": "0"})
    op = QuamotionExportOperator(
        task_id="t",
        resource="test_runs",
        destination=str(tmp_path / "runs.jsonl"),
        hook_params={"retry": RetryPolicy(max_attempts=3), "project": "acme"},
    )
    with pytest.raises(QuamotionApiError, match="503"):
        op.execute({})
    assert api_calls(m, "GET", "/project/acme/api/testRun") == 3
    assert [h.settings.retry.max_attempts for h in made] == [3]
    assert made[0].settings.project == "acme"
    assert not (tmp_path / "runs.jsonl").exists()


@pytest.mark.parametrize("operator", ["api", "export"])
def test_unknown_hook_setting_fails_at_parse_time(operator: str) -> None:
    with rm.Mocker() as mocker, pytest.raises(QuamotionConfigError, match="retries"):
        if operator == "api":
            QuamotionApiOperator(task_id="t", endpoint="x", hook_params={"retries": 2})
        else:
            QuamotionExportOperator(
                task_id="t", resource="jobs", destination="/tmp/x.jsonl", hook_params={"retries": 2}
            )
    assert not mocker.called


# --- the export's Asset event and templated arguments ----------------------------------------------


def outlet_events() -> Any:
    from airflow.sdk.execution_time.context import OutletEventAccessors

    return OutletEventAccessors()


def test_export_emits_its_file_as_an_asset_event_with_rows_and_window(runs_api: Any, tmp_path: Path) -> None:
    from airflow.sdk import DAG, AssetAlias

    target = tmp_path / "dt=2024-01-02" / "test_runs.jsonl"
    with DAG("daily_export", schedule=None):
        op = QuamotionExportOperator(
            task_id="runs",
            resource="test_runs",
            destination=str(target),
            since="2024-01-02",
            until="2024-01-03",
        )
    alias = AssetAlias("quamotion_export__daily_export__runs")
    assert op.asset_alias == alias.name and alias in op.outlets  # known at parse time
    events = outlet_events()
    summary = op.execute({"outlet_events": events})
    (event,) = events[alias].asset_alias_events
    assert event.dest_asset_key.uri == f"file://{target}"
    assert event.extra == {
        "rows": summary["rows"],
        "since": summary["since"],
        "until": summary["until"],
        "resource": "test_runs",
        "format": "jsonl",
    }
    assert summary["rows"] == 2


def test_export_puts_the_extra_on_a_declared_outlet_asset(runs_api: Any, tmp_path: Path) -> None:
    from airflow.sdk import Asset, AssetAlias

    target = tmp_path / "runs.csv"
    asset = Asset(uri=f"file://{target}")
    op = QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(target), format="csv", outlets=[asset]
    )
    events = outlet_events()
    op.execute({"outlet_events": events})
    assert events[asset].extra["rows"] == 5 and events[asset].extra["format"] == "csv"
    assert events[AssetAlias(op.asset_alias)].asset_alias_events == []  # no second event for it


def test_export_without_asset_event_or_outside_a_task_runner(runs_api: Any, tmp_path: Path) -> None:
    op = QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(tmp_path / "r.jsonl"), emit_asset_event=False
    )
    assert op.outlets == []
    assert op.execute({"outlet_events": outlet_events()})["rows"] == 5
    with_event = QuamotionExportOperator(
        task_id="t", resource="test_runs", destination=str(tmp_path / "s.jsonl")
    )
    assert with_event.execute({})["rows"] == 5  # no outlet_events (not Airflow's task runner): no event


def test_table_asset_uris_hold_no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from airflow_provider_quamotion.operators.quamotion import table_asset_uri

    monkeypatch.setenv("AIRFLOW_CONN_PG", "postgresql://u:s3cret@db.example:5432/analytics")
    monkeypatch.setenv("AIRFLOW_CONN_MY", "mysql://u:s3cret@my.example:3306/shop")
    monkeypatch.setenv(
        "AIRFLOW_CONN_LITE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "w.db")})
    )
    assert table_asset_uri("pg", "jobs") == "postgres://db.example:5432/analytics/public/jobs"
    assert table_asset_uri("pg", "raw.jobs") == "postgres://db.example:5432/analytics/raw/jobs"
    assert table_asset_uri("my", "jobs") == "mysql://my.example:3306/shop/jobs"
    assert table_asset_uri("lite", "jobs") == f"sqlite://{tmp_path}/w.db/jobs"


def test_export_to_a_table_emits_the_table_under_the_connection(
    runs_api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import Asset, AssetAlias

    db = tmp_path / "w.db"
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    op = QuamotionExportOperator(task_id="t", resource="jobs", sql_conn_id="warehouse", table="qm_jobs")
    events = outlet_events()
    summary = op.execute({"outlet_events": events})
    (event,) = events[AssetAlias(op.asset_alias)].asset_alias_events
    assert event.dest_asset_key.uri == Asset(uri=f"sqlite://{db}/qm_jobs").uri  # as Airflow normalises it
    assert event.extra["rows"] == summary["rows"] > 0 and event.extra["format"] == "sql"


def test_export_format_fields_and_sql_conn_id_are_templated(runs_api: Any, tmp_path: Path) -> None:
    assert {"format", "fields", "sql_conn_id", "quamotion_conn_id"} <= set(
        QuamotionExportOperator.template_fields
    )
    op = QuamotionExportOperator(
        task_id="t",
        resource="test_runs",
        destination=str(tmp_path / "r.csv"),
        format="{{ params.fmt }}",
        fields="testRunId, appId",
    )
    op.format = "CSV"  # as rendered
    op.execute({})
    with open(tmp_path / "r.csv", newline="") as fh:
        assert next(csv.reader(fh)) == ["testRunId", "appId"]
    op.format = "xml"
    with pytest.raises(QuamotionConfigError, match="not one of jsonl, csv, parquet"):
        op.execute({})
    op.format, op.fields = "csv", "['testRunId', 'appId']"  # a list Jinja rendered to text
    with pytest.raises(QuamotionConfigError, match="render_template_as_native_obj"):
        op.execute({})
    with pytest.raises(QuamotionConfigError):
        QuamotionExportOperator(task_id="t", resource="test_runs", destination="x", format="xml")
