"""
### Call any Quamotion Cloud endpoint, and wait on any condition

* `QuamotionApiOperator` calls an endpoint: `"/api/version"` resolves from the host root,
  `"deviceGroup"` against the project's API root. The (small) result goes to XCom; a large body goes
  to `destination` (storage) and only its URI to XCom.
* `QuamotionSensor` waits until a condition on an endpoint's JSON holds. In deferrable mode the
  trigger fetches and the worker judges, so your `response_check` callable never travels to the
  triggerer.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import chain, dag

from airflow_provider_quamotion.operators.quamotion import QuamotionApiOperator
from airflow_provider_quamotion.sensors.quamotion import QuamotionSensor

EXPORT_BASE = "{{ var.value.get('quamotion_export_base', '/tmp/quamotion-exports') }}"


def android_device_group_names(response: Any) -> list[str]:
    """Keep XCom small: only the names of the Android device groups."""
    return [g["name"] for g in response.json() if "android" in g["name"]]


def has_android_app(apps: list[dict[str, Any]]) -> bool:
    """The condition to wait for: an Android build was uploaded."""
    return any(app.get("operatingSystem") == "Android" for app in apps)


@dag(
    dag_id="quamotion_api_and_sensor",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["quamotion", "example"],
    doc_md=__doc__,
)
def quamotion_api_and_sensor() -> None:
    # --8<-- [start:api_operator]
    version = QuamotionApiOperator(task_id="get_version", endpoint="/api/version")
    groups = QuamotionApiOperator(
        task_id="android_device_groups", endpoint="deviceGroup", response_filter=android_device_group_names
    )
    all_runs = QuamotionApiOperator(
        task_id="all_test_runs_to_storage",
        endpoint="testRun",
        # run_after, not ds: a run triggered without a date has no logical date (ds is undefined).
        destination=EXPORT_BASE + "/raw/{{ dag_run.run_after | ds }}/testRun.json",
    )
    # --8<-- [end:api_operator]

    # --8<-- [start:generic_sensor]
    wait_for_app = QuamotionSensor(
        task_id="wait_for_android_app",
        endpoint="app",
        response_check=has_android_app,
        deferrable=True,
        poke_interval=5,
        timeout=600,
    )
    # --8<-- [end:generic_sensor]

    chain(version, [groups, all_runs], wait_for_app)


quamotion_api_and_sensor()
