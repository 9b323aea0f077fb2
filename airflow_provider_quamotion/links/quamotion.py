"""Operator extra links: a button on the task that opens the test run in the Quamotion Cloud portal.

The portal URL is **inferred**: the API documents no web URL of a run. It is built as
``{host}{relativeUrl}testRun/{testRunId}`` - the connection's base URL, the project's ``relativeUrl``
(``/project/acme/``) and the run - see :func:`test_run_url`. The worker computes it once and pushes it
to XCom under :data:`TEST_RUN_URL_KEY`, so rendering the link costs no API call and works for failed
tasks too. When the connection names its project, the URL is built from the settings alone
(:func:`known_test_run_url`, ``/project/<name>/``): a deferrable sensor spends no token request and no
project lookup in the worker for its link. Without a project name the worker looks the project up
once (the account's only project).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

#: XCom key of the run's id (pushed by the start operator and the sensor).
TEST_RUN_ID_KEY = "test_run_id"
#: XCom key of the run's portal URL, read by :class:`QuamotionTestRunLink`.
TEST_RUN_URL_KEY = "test_run_url"


def test_run_url(base_url: str, relative_url: str, test_run_id: str) -> str:
    """The portal URL of a test run: ``{host}{relativeUrl}testRun/{id}`` (an inferred form).

    :param base_url: the connection's base URL (``https://cloud.quamotion.mobi``).
    :param relative_url: the project's ``relativeUrl`` (``/project/acme/``) or its API root
        (``/project/acme/api/``, the trailing ``api/`` is dropped).
    :param test_run_id: the run's id.
    """
    relative = "/" + relative_url.strip("/") + "/"
    if relative.endswith("/api/"):
        relative = relative[: -len("api/")]
    relative = relative.replace("//", "/")
    return f"{base_url.rstrip('/')}{relative}testRun/{quote(str(test_run_id), safe='')}"


test_run_url.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def known_test_run_url(base_url: str, project: str | None, test_run_id: str) -> str | None:
    """The portal URL of a run from the connection's settings alone (no network), or ``None``.

    Known when the connection names its project: the portal's project path is ``/project/<name>/``
    (the form the API's ``relativeUrl`` takes). Without a project name only the API knows it.

    :param base_url: the connection's base URL.
    :param project: the connection's project name, or ``None``.
    :param test_run_id: the run's id.
    """
    if not project:
        return None
    return test_run_url(base_url, f"/project/{quote(str(project), safe='')}/", test_run_id)


class QuamotionTestRunLink(BaseOperatorLink):
    """ "Quamotion Cloud test run": opens the task's test run in the portal (URL read from XCom)."""

    name = "Quamotion Cloud test run"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The run's portal URL from the task's XCom, or ``""`` before the run exists.

        :param operator: the task.
        :param ti_key: the task instance.
        """
        from airflow.sdk.execution_time.xcom import XCom

        value: Any = XCom.get_value(ti_key=ti_key, key=TEST_RUN_URL_KEY)
        return str(value) if value else ""
