"""The Quamotion Cloud API's shape, in one place: endpoint paths, record fields and job statuses.

Nothing here performs I/O. Paths without a leading ``/`` are *project-relative*: they resolve
against the project's API root ``{host}{relativeUrl}api/``. Paths with a leading ``/`` resolve
from the host root. See ``shared/reference/quamotion-cloud-api.md`` for the evidence behind them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

# --- defaults -------------------------------------------------------------------------------------

DEFAULT_HOST = "https://cloud.quamotion.mobi"
DEFAULT_RESOURCE = "https://cloud.quamotion.mobi/"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_TENANT = "common"

# --- endpoints ------------------------------------------------------------------------------------

VERSION = "/api/version"
LOGIN = "/api/login"
PROJECTS = "/api/project"
APPLICATIONS = "app"
TEST_PACKAGES = "testPackage"
DEVICE_GROUPS = "deviceGroup"
TEST_RUNS = "testRun"
SCHEDULES = "schedule"
UPLOAD_FILE_FIELD = "files"
LOGIN_API_KEY_FIELD = "apiKey"


def test_run_jobs(test_run_id: str) -> str:
    """Project-relative path of a test run's jobs."""
    return f"testRun/{_segment(test_run_id)}/jobs"


def job(job_id: int | str) -> str:
    """Project-relative path of one job."""
    return f"job/{_segment(job_id)}"


def job_log(job_id: int | str, *, live: bool = False) -> str:
    """Project-relative path of a job's plain-text log (``live`` follows it while it runs)."""
    return f"job/{_segment(job_id)}/log" + ("/live" if live else "")


def job_artifacts(job_id: int | str) -> str:
    """Project-relative path of a job's artifacts zip."""
    return f"job/{_segment(job_id)}/artifacts"


def schedule(schedule_id: int | str) -> str:
    """Project-relative path of one schedule."""
    return f"schedule/{_segment(schedule_id)}"


def _segment(value: int | str) -> str:
    text = str(value)
    # read as a server would: percent-decoded (repeatedly: %252e is %2e once decoded), a "%2e%2e"
    # id is "..", and "%2f" a "/"; either would change the request's path
    decoded, seen = text, set()
    while "%" in decoded and decoded not in seen:
        seen.add(decoded)
        decoded = unquote(decoded)
    if not text or decoded in {".", ".."} or any(c in s for s in (text, decoded) for c in "/\\?#"):
        raise ValueError(
            f"{value!r} is not a valid path segment (an id must not be '.' or '..' or contain '/', "
            "'\\', '?' or '#', also percent-encoded)"
        )
    return text


# --- record fields --------------------------------------------------------------------------------

PROJECT_NAME = "name"
PROJECT_RELATIVE_URL = "relativeUrl"
TEST_RUN_ID = "testRunId"
TEST_RUN_SCHEDULED = "scheduled"
JOB_ID = "id"
JOB_NAME = "name"
JOB_STATUS = "status"
JOB_STARTED = "started"
JOB_HAS_ARTIFACTS = "hasArtifacts"
LIST_WRAPPER_KEY = "value"


# --- timestamps -----------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The time zone named ``name`` (IANA, e.g. ``"Europe/Brussels"``; ``"UTC"`` is UTC itself).

    :raises ValueError: when the system (or the ``tzdata`` package) does not know the name.
    """
    if name.strip().upper() in ("UTC", "Z", "ETC/UTC"):
        return timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as err:
        raise ValueError(f"unknown time zone {name!r}: {err}") from None


def parse_timestamp(text: str, naive_tz: tzinfo = timezone.utc) -> datetime:
    """An aware UTC datetime from an ISO 8601 timestamp of the API (the one place they are parsed).

    A value with an offset (``+00:00``, ``Z``) keeps it. A value without one
    (``"2018-03-19T13:15:35"``, as every ``scheduled`` in the captured list) is read as wall-clock
    time in ``naive_tz`` (UTC by default; the connection's ``scheduled_timezone``). Around a DST
    change a wall-clock time that occurs twice is read as its first occurrence and one that does not
    occur (skipped by the clocks) with the offset in force before the change (``fold=0``).

    :param text: the timestamp.
    :param naive_tz: the zone of an offsetless value.
    :raises ValueError: when ``text`` is not an ISO 8601 timestamp.
    """
    value = str(text).strip()
    parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_tz)
    return parsed.astimezone(timezone.utc)


def unwrap_list(payload: Any) -> list[Any]:
    """Return a list reply's records: a bare JSON array, or one wrapped as ``{"value": [...]}``."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, Mapping) and isinstance(payload.get(LIST_WRAPPER_KEY), list):
        return list(payload[LIST_WRAPPER_KEY])
    raise TypeError(
        f"expected a JSON array (or an object with a {LIST_WRAPPER_KEY!r} array), got {type(payload).__name__}"
    )


def jobs_from_reply(payload: Any, where: str = "testRun/{id}/jobs") -> list[dict[str, Any]]:
    """The jobs of a ``testRun/{id}/jobs`` reply, checked: an array of job objects with a status.

    :raises QuamotionResponseError: naming what was expected and what came instead (an object, an
        array of numbers or of arrays, a job without a ``status`` string).
    """
    from airflow_provider_quamotion.exceptions import QuamotionResponseError

    try:
        records = unwrap_list(payload)
    except TypeError as err:
        raise QuamotionResponseError(f"{where}: {err}") from None
    for index, job in enumerate(records):
        if not isinstance(job, Mapping):
            raise QuamotionResponseError(
                f"{where}: expected an array of job objects, item {index} is a {type(job).__name__}"
            )
        if not isinstance(job.get(JOB_STATUS), str):
            raise QuamotionResponseError(
                f"{where}: expected each job to have a {JOB_STATUS!r} string, job {index} "
                f"(id {job.get(JOB_ID)!r}) has {type(job.get(JOB_STATUS)).__name__}"
            )
    return [dict(job) for job in records]


# --- starting a test run -------------------------------------------------------------------------

DEVICE_GROUP_ID = "deviceGroupId"
DEVICE_GROUP_NAME = "name"
#: The fields of a ``deviceGroup`` object in a start request (the C# client's ``DeviceGroup`` model).
DEVICE_GROUP_OBJECT_FIELDS = (DEVICE_GROUP_ID, DEVICE_GROUP_NAME, "devices", "variables")


def device_group_object(group: Mapping[str, Any] | str) -> dict[str, Any]:
    """The ``deviceGroup`` object of a start request: a group record's id, name, devices and variables.

    A bare string (an id or a name the caller could not resolve) becomes ``{"deviceGroupId": ...}``
    when it looks like a GUID, else ``{"name": ...}``.
    """
    if isinstance(group, Mapping):
        return {k: group[k] for k in DEVICE_GROUP_OBJECT_FIELDS if k in group and group[k] is not None}
    text = str(group)
    return {DEVICE_GROUP_ID: text} if is_guid(text) else {DEVICE_GROUP_NAME: text}


def is_guid(value: str) -> bool:
    """Whether ``value`` is a GUID (any case, with or without braces)."""
    try:
        uuid.UUID(value.strip())
    except (ValueError, AttributeError):
        return False
    return True


def create_test_run_request(
    app: Mapping[str, Any],
    test_package: Mapping[str, Any],
    device_group: Mapping[str, Any] | str,
    *,
    parameters: str = "",
    environment: Mapping[str, str] | None = None,
    schedule: str = "",
    results_callback: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The body of ``POST testRun`` (the one place it is built).

    It carries both a ``deviceGroupId`` (what the Java client, the Jenkins plugin and the Bitrise
    step send: a GUID, or a name in Bitrise) and a whole ``deviceGroup`` object (what the C# client
    sends since May 2018), so either contract is met. ``resultsCallBack`` is sent only when given:
    no vendor client sends it with empty strings.

    :param device_group: the device group record (``deviceGroupId``, ``name``, ``devices``,
        ``variables``), or its id or name.
    :param results_callback: ``{"apiKey", "endPoint"}``; omitted when ``None`` or empty.
    """
    group = device_group_object(device_group)
    group_id = group.get(DEVICE_GROUP_ID) or group.get(DEVICE_GROUP_NAME) or str(device_group)
    body: dict[str, Any] = {
        "app": dict(app),
        "testPackage": {"name": test_package.get("name"), "version": test_package.get("version")},
        DEVICE_GROUP_ID: group_id,
        "deviceGroup": group,
        "schedule": schedule,
        "testScriptParameters": parameters,
        "testScriptEnvironmentVariables": dict(environment or {}),
    }
    callback = {k: v for k, v in (results_callback or {}).items() if v not in (None, "")}
    if callback:
        body["resultsCallBack"] = callback
    return body


# --- resources the export operator knows ----------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """A listable collection: where it lives and whether it is windowed on ``scheduled``.

    ``fields`` are the record fields seen in real replies, in the order tabular exports (csv,
    parquet, SQL) use as their default columns.
    """

    name: str
    endpoint: str
    windowed: bool = False
    fields: tuple[str, ...] = ()


PROJECT_FIELDS = (PROJECT_NAME, "tenantId", "gitLabId", "flags", PROJECT_RELATIVE_URL)
APPLICATION_FIELDS = (
    "appId",
    "displayName",
    "version",
    "versionDisplayName",
    "operatingSystem",
    "operatingSystemVersion",
    "cpuType",
)
TEST_PACKAGE_FIELDS = ("name", "version", "testPackageType")
DEVICE_GROUP_FIELDS = ("deviceGroupId", "name", "displayName", "devices", "variables")
SCHEDULE_FIELDS = (
    "id",
    "description",
    "ref",
    "cron",
    "cron_timezone",
    "next_run_at",
    "active",
    "created_at",
    "updated_at",
    "last_pipeline",
    "owner",
)
TEST_RUN_FIELDS = (
    TEST_RUN_ID,
    "deviceGroup",
    "operatingSystem",
    "appId",
    "appVersion",
    "testPackageName",
    "testPackageVersion",
    TEST_RUN_SCHEDULED,
    "commitId",
    "branch",
    "scheduleId",
    "cronSchedule",
    "jobs",
)
#: A job row of the ``jobs`` export: the job's fields after its run's ``testRunId``.
JOB_FIELDS = (
    TEST_RUN_ID,
    JOB_ID,
    JOB_NAME,
    JOB_STATUS,
    "duration",
    JOB_STARTED,
    "commitId",
    JOB_HAS_ARTIFACTS,
)

#: The SQL export's column types per resource (``text``, ``integer``, ``float``, ``boolean``,
#: ``timestamp``, ``json``; a field not named here is text), as real replies carry them.
FIELD_TYPES: dict[str, dict[str, str]] = {
    "projects": {"tenantId": "integer", "gitLabId": "integer", "flags": "integer"},
    "applications": {},
    "test_packages": {},
    "device_groups": {"devices": "json", "variables": "json"},
    "schedules": {
        "id": "integer",
        "next_run_at": "timestamp",
        "active": "boolean",
        "created_at": "timestamp",
        "updated_at": "timestamp",
        "last_pipeline": "json",
        "owner": "json",
    },
    "test_runs": {
        "operatingSystem": "integer",
        TEST_RUN_SCHEDULED: "timestamp",
        "scheduleId": "integer",
        "jobs": "json",
    },
    "jobs": {JOB_ID: "integer", "duration": "float", JOB_STARTED: "timestamp", JOB_HAS_ARTIFACTS: "boolean"},
}
#: The key ``mode="merge"`` upserts by, per resource.
RESOURCE_KEYS: dict[str, tuple[str, ...]] = {"test_runs": (TEST_RUN_ID,), "jobs": (JOB_ID,)}

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource("projects", PROJECTS, fields=PROJECT_FIELDS),
        Resource("applications", APPLICATIONS, fields=APPLICATION_FIELDS),
        Resource("test_packages", TEST_PACKAGES, fields=TEST_PACKAGE_FIELDS),
        Resource("device_groups", DEVICE_GROUPS, fields=DEVICE_GROUP_FIELDS),
        Resource("schedules", SCHEDULES, fields=SCHEDULE_FIELDS),
        Resource("test_runs", TEST_RUNS, windowed=True, fields=TEST_RUN_FIELDS),
        Resource("jobs", TEST_RUNS, windowed=True, fields=JOB_FIELDS),
    )
}

# --- job statuses and a run's state ---------------------------------------------------------------


class JobStatus(str, enum.Enum):
    """A test job's status (GitLab CI's vocabulary, which Quamotion Cloud reports)."""

    CREATED = "created"
    PENDING = "pending"
    RUNNING = "running"
    WAITING_FOR_RESOURCE = "waiting_for_resource"
    PREPARING = "preparing"
    SCHEDULED = "scheduled"
    MANUAL = "manual"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"

    @classmethod
    def parse(cls, value: Any) -> JobStatus:
        """Parse a status; an unknown one raises ``ValueError`` naming the known ones."""
        known_text = _STATUS_TEXT.get(value) if isinstance(value, str) else None
        if known_text is not None:  # the common case: the API's own spelling, read without an enum lookup
            return known_text
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown job status {value!r}; known statuses: {known}") from None

    @property
    def is_terminal(self) -> bool:
        """Whether a job in this status has finished."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.SKIPPED})
#: Each status by its lower-case and capitalised spellings (``"running"``, ``"Running"``).
_STATUS_TEXT: dict[str, JobStatus] = {
    text: status for status in JobStatus for text in (status.value, status.value.capitalize())
}


class TestRunState(str, enum.Enum):
    """A test run's state, derived from its jobs (the API gives runs no status of their own)."""

    __test__ = False  # not a pytest test class

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        """Whether the run has finished."""
        return self in (TestRunState.SUCCESS, TestRunState.FAILED)


def _started_key(job: Mapping[str, Any]) -> tuple[float, int, str]:
    """Order of a job's attempts: by ``started``, then ``id``; an attempt not started yet is the latest."""
    started = job.get(JOB_STARTED)
    moment = float("inf")
    if isinstance(started, str) and started.strip():
        with contextlib.suppress(ValueError):
            moment = parse_timestamp(started).timestamp()
    raw_id = job.get(JOB_ID)
    try:
        numeric_id = int(raw_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return (moment, -1, str(raw_id))
    return (moment, numeric_id, "")


def job_attempts(jobs: Iterable[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """A run's jobs grouped into attempts per job ``name``, each group oldest first.

    Job lists keep retried attempts (a job canceled and re-run under the same ``name``); the last
    attempt of a group (by ``started``, then ``id``) is the one that counts. A job without a name
    stands alone. Groups keep the order of their first appearance.

    :param jobs: the run's jobs as returned by ``testRun/{id}/jobs``.
    """
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for index, job in enumerate(j for j in jobs if isinstance(j, Mapping)):
        name = job.get(JOB_NAME)
        key = ("name", name) if isinstance(name, str) and name else ("job", index)
        groups.setdefault(key, []).append(job)
    # a job attempted once (nearly all) needs no ordering, nor its ``started`` parsed
    return [group if len(group) == 1 else sorted(group, key=_started_key) for group in groups.values()]


def latest_attempts(jobs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The latest attempt of each job name (see :func:`job_attempts`)."""
    return [group[-1] for group in job_attempts(jobs)]


def run_state_from_jobs(jobs: Iterable[Mapping[str, Any]], *, allow_skipped: bool = False) -> TestRunState:
    """Derive a run's state from the latest attempt of each of its jobs.

    No jobs: queued. Any latest attempt unfinished: running. All finished: success when every latest
    attempt is ``success`` (or ``skipped`` with ``allow_skipped``), else failed. A job canceled and
    re-run passing under the same name therefore passes, as GitLab, the vendor's Jenkins plugin and
    its Bitrise step report it. A status this module does not know (e.g. ``canceling``) counts as
    not finished, with one warning naming the unknown statuses.

    :param jobs: the run's jobs as returned by ``testRun/{id}/jobs``.
    :param allow_skipped: count ``skipped`` jobs as passed.
    """
    statuses: list[JobStatus | None] = []
    unknown: list[str] = []
    for job in latest_attempts(jobs):
        try:
            statuses.append(JobStatus.parse(job.get(JOB_STATUS)))
        except ValueError:
            statuses.append(None)
            unknown.append(repr(job.get(JOB_STATUS)))
    if not statuses:
        return TestRunState.QUEUED
    if unknown:
        log.warning(
            "Unknown job status(es) %s, counted as not finished (known statuses: %s).",
            ", ".join(sorted(set(unknown))),
            ", ".join(s.value for s in JobStatus),
        )
    if not all(s is not None and s.is_terminal for s in statuses):
        return TestRunState.RUNNING
    passed = {JobStatus.SUCCESS, JobStatus.SKIPPED} if allow_skipped else {JobStatus.SUCCESS}
    return TestRunState.SUCCESS if all(s in passed for s in statuses) else TestRunState.FAILED


#: At most this many jobs go into a summary (a trigger event, an error message).
MAX_SUMMARY_JOBS = 50
#: At most this many earlier attempts are named per job in a summary.
MAX_SUMMARY_EARLIER = 5


def summarize_jobs(jobs: Iterable[Mapping[str, Any]], limit: int = MAX_SUMMARY_JOBS) -> list[dict[str, Any]]:
    """A compact per-job summary (id, device, status) of at most ``limit`` jobs, failed ones first.

    One entry per job name: its latest attempt, the one that decides the run's state. A job that
    was retried also names its attempts: ``attempt`` (the latest attempt's number) and ``earlier``
    (the earlier attempts' ids and statuses, oldest first, at most ``MAX_SUMMARY_EARLIER``). Small
    enough for a trigger event or an error message; the device is the job's ``name`` (the device
    selection the job ran on).

    :param jobs: the run's jobs as returned by ``testRun/{id}/jobs``.
    :param limit: the most jobs kept.
    """
    compact: list[dict[str, Any]] = []
    for group in job_attempts(jobs):
        latest = group[-1]
        entry: dict[str, Any] = {
            "id": latest.get(JOB_ID),
            "device": latest.get(JOB_NAME),
            "status": str(latest.get(JOB_STATUS)),
        }
        if len(group) > 1:
            entry["attempt"] = len(group)
            entry["earlier"] = [
                {"id": j.get(JOB_ID), "status": str(j.get(JOB_STATUS))}
                for j in group[:-1][-MAX_SUMMARY_EARLIER:]
            ]
        compact.append(entry)
    compact.sort(key=lambda j: j["status"] == JobStatus.SUCCESS.value)
    return compact[: max(0, limit)]
