"""The "Quamotion Cloud test run" extra link: URL form, XCom read, registration.

The link rendered by a real task run is checked in tests/sensors/test_dags.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_quamotion import get_provider_info
from airflow_provider_quamotion.links.quamotion import TEST_RUN_URL_KEY, QuamotionTestRunLink, test_run_url
from airflow_provider_quamotion.operators.test_run import QuamotionStartTestRunOperator
from airflow_provider_quamotion.sensors.quamotion import QuamotionTestRunSensor


@pytest.mark.parametrize(
    ("base", "relative", "expected"),
    [
        (
            "https://cloud.quamotion.mobi",
            "/project/acme/",
            "https://cloud.quamotion.mobi/project/acme/testRun/r-1",
        ),
        (
            "https://cloud.quamotion.mobi/",
            "/project/acme/api/",
            "https://cloud.quamotion.mobi/project/acme/testRun/r-1",
        ),
        ("https://h:8443", "project/acme", "https://h:8443/project/acme/testRun/r-1"),
    ],
)
def test_url_form(base: str, relative: str, expected: str) -> None:
    assert test_run_url(base, relative, "r-1") == expected


def test_run_id_is_quoted() -> None:
    assert test_run_url("https://h", "/p/", "a/b?c").endswith("/p/testRun/a%2Fb%3Fc")


def test_get_link_reads_the_url_from_xcom(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.xcom import XCom

    seen: dict[str, Any] = {}

    def get_value(*, ti_key: Any, key: str) -> Any:
        seen["key"] = key
        return {"ti": "https://h/project/acme/testRun/r-1"}.get(ti_key)

    monkeypatch.setattr(XCom, "get_value", get_value)
    link = QuamotionTestRunLink()
    assert link.name == "Quamotion Cloud test run"
    assert link.get_link(None, ti_key="ti") == "https://h/project/acme/testRun/r-1"  # type: ignore[arg-type]
    assert seen["key"] == TEST_RUN_URL_KEY
    assert link.get_link(None, ti_key="other") == ""  # type: ignore[arg-type]


def test_link_is_registered_and_attached() -> None:
    path = f"{QuamotionTestRunLink.__module__}.{QuamotionTestRunLink.__qualname__}"
    assert path in get_provider_info()["extra-links"]
    for cls in (QuamotionStartTestRunOperator, QuamotionTestRunSensor):
        assert any(isinstance(link, QuamotionTestRunLink) for link in cls.operator_extra_links)


def test_known_url_from_the_project_name_alone() -> None:
    from airflow_provider_quamotion.links.quamotion import known_test_run_url

    assert known_test_run_url("https://h/", "acme", "r-1") == "https://h/project/acme/testRun/r-1"
    assert known_test_run_url("https://h", "a b/c", "r-1") == "https://h/project/a%20b%2Fc/testRun/r-1"
    assert known_test_run_url("https://h", None, "r-1") is None  # only the API knows the account's project
