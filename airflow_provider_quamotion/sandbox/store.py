"""What changes while the sandbox runs: uploads, created test runs (and their lifecycle), schedules."""

from __future__ import annotations

import itertools
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_quamotion.api import (
    JOB_HAS_ARTIFACTS,
    JOB_ID,
    JOB_NAME,
    JOB_STATUS,
    TEST_RUN_ID,
    TEST_RUN_SCHEDULED,
    JobStatus,
    is_guid,
)
from airflow_provider_quamotion.sandbox.data import (
    ANDROID,
    IOS,
    OS_CODES,
    DeviceGroup,
    Record,
    SandboxData,
    application,
    iso_offset,
    iso_z,
    test_package,
)

#: Jobs of runs created through the API get ids from here on (above the generated ones, and below
#: 2**31: the vendor's C# and Java clients model job ids as 32-bit ``int``).
CREATED_JOB_ID_BASE = 1_900_000_000
#: A created run whose ``testScriptParameters`` contain this word (any case) ends ``failed``.
FAIL_MARKER = "fail"
#: Share of ``run_seconds`` a created run's jobs spend ``pending`` before ``running``.
PENDING_SHARE = 0.25
APP_EXTENSIONS = {".apk": (ANDROID, "8.0", "arm64-v8a"), ".ipa": (IOS, "11.0", "arm64")}
_VERSIONED = re.compile(r"^(?P<name>.+?)[-_ ]v?(?P<version>\d+(?:\.\d+)*)$")
_CRON = re.compile(r"^\S+(\s+\S+){4,5}$")
_serials = itertools.count()


class BadRequest(ValueError):
    """A request the sandbox rejects with 400 (the message says why)."""


def _split_name(filename: str, extensions: tuple[str, ...]) -> tuple[str, str, str]:
    """``(stem name, version, extension)`` of an uploaded file name like ``Shop-2.3.0.apk``."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = base.rpartition(".")
    ext = f".{ext.lower()}" if dot else ""
    if not stem or (extensions and ext not in extensions):
        raise BadRequest(f"unsupported file {filename!r}: expected one of {', '.join(extensions)}")
    m = _VERSIONED.match(stem)
    return (m.group("name"), m.group("version"), ext) if m else (stem, "1.0", ext)


def application_from_upload(filename: str) -> Record:
    """A plausible ``Application`` record for an uploaded ``.apk`` / ``.ipa``.

    :param filename: the uploaded file's name, e.g. ``Shop-2.3.0.apk``.
    """
    name, version, ext = _split_name(filename, tuple(APP_EXTENSIONS))
    os_name, os_version, cpu = APP_EXTENSIONS[ext]
    slug = re.sub(r"[^a-z0-9]+", "", name.lower()) or "app"
    return application(
        f"com.sandbox.{slug}", name, version.replace(".", ""), version, os_name, os_version, cpu
    )


def test_package_from_upload(filename: str) -> Record:
    """A plausible ``TestPackage`` record for an uploaded package, e.g. ``smoke-tests-1.0.2.zip``.

    :param filename: the uploaded file's name.
    """
    name, version, ext = _split_name(filename, ())
    # the real service keeps the file's extension in the name (``genymotiontest.ps1``)
    return test_package(name + ext, version, "PowerShellScript" if ext == ".ps1" else "Pester")


test_package_from_upload.__test__ = False  # type: ignore[attr-defined]


@dataclass
class CreatedRun:
    """A test run created with ``POST testRun``: queued, then its jobs pending, running and finished.

    :param record: the ``TestRun`` record.
    :param devices: the devices of its device group (one job each).
    :param fail: whether its jobs end ``failed``.
    :param queue_seconds: how long it stays queued (no jobs).
    :param run_seconds: how long its jobs take once dequeued.
    :param job_ids: its jobs' ids.
    """

    record: Record
    devices: list[Record]
    fail: bool
    queue_seconds: float
    run_seconds: float
    job_ids: list[int]
    created_wall: float = field(default_factory=time.time)
    created_mono: float = field(default_factory=time.monotonic)

    def progress(self) -> float | None:
        """``None`` while queued, then the share of ``run_seconds`` elapsed (capped at 1)."""
        elapsed = time.monotonic() - self.created_mono - self.queue_seconds
        if elapsed < 0:
            return None
        return 1.0 if self.run_seconds <= 0 else min(1.0, elapsed / self.run_seconds)

    def jobs(self) -> list[Record]:
        """The run's jobs as of now (none while queued)."""
        progress = self.progress()
        return [] if progress is None else [self._job(k, progress) for k in range(len(self.devices))]

    def job(self, k: int) -> tuple[Record, float]:
        """Job ``k`` as of now and the run's progress (0 while queued).

        :param k: the device index.
        """
        progress = self.progress()
        return self._job(k, progress or 0.0), progress or 0.0

    def _job(self, k: int, progress: float) -> Record:
        started = self.created_wall + self.queue_seconds
        if progress >= 1:
            status = JobStatus.FAILED if self.fail else JobStatus.SUCCESS
        else:
            status = JobStatus.PENDING if progress < PENDING_SHARE else JobStatus.RUNNING
        return {
            JOB_ID: self.job_ids[k],
            JOB_NAME: self.devices[k]["deviceSelectionId"],
            JOB_STATUS: status.value,
            "duration": round(progress * self.run_seconds, 1) if status is not JobStatus.PENDING else None,
            "started": iso_z(started) if status is not JobStatus.PENDING else None,
            "commitId": self.record["commitId"],
            JOB_HAS_ARTIFACTS: status.is_terminal,
        }


class ProjectStore:
    """One project's mutable state on top of the generated data.

    :param data: the generated catalog and history.
    :param queue_seconds: how long created runs stay queued.
    :param run_seconds: how long created runs' jobs run.
    """

    def __init__(self, data: SandboxData, *, queue_seconds: float, run_seconds: float) -> None:
        self.data = data
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.uploaded_apps: list[Record] = []
        self.uploaded_packages: list[Record] = []
        self.runs: dict[str, CreatedRun] = {}
        self.jobs: dict[int, tuple[CreatedRun, int]] = {}
        self.added_schedules: list[Record] = []
        self.deleted_schedules: set[int] = set()

    # --- catalog ----------------------------------------------------------------------------------

    def applications(self) -> list[Record]:
        """Generated and uploaded applications."""
        return self.data.applications + self.uploaded_apps

    def test_packages(self) -> list[Record]:
        """Generated and uploaded test packages."""
        return self.data.test_packages + self.uploaded_packages

    @staticmethod
    def _add(records: list[Record], record: Record, keys: tuple[str, ...]) -> None:
        """Add a record, replacing an upload with the same identity."""
        ident = tuple(record[k] for k in keys)
        records[:] = [r for r in records if tuple(r[k] for k in keys) != ident] + [record]

    def upload_app(self, filename: str) -> Record:
        """Register an uploaded app and return its record.

        :param filename: the uploaded file's name (``.apk`` or ``.ipa``).
        """
        record = application_from_upload(filename)
        self._add(self.uploaded_apps, record, ("appId", "version", "operatingSystem"))
        return record

    def upload_test_package(self, filename: str) -> Record:
        """Register an uploaded test package and return its record.

        :param filename: the uploaded file's name.
        """
        record = test_package_from_upload(filename)
        self._add(self.uploaded_packages, record, ("name", "version"))
        return record

    def schedules(self) -> list[Record]:
        """The schedules not deleted."""
        every = self.data.schedules + self.added_schedules
        return [s for s in every if s["id"] not in self.deleted_schedules]

    def delete_schedule(self, schedule_id: int) -> bool:
        """Delete a schedule; ``False`` when there is none with that id.

        :param schedule_id: the schedule's id.
        """
        if not any(s["id"] == schedule_id for s in self.schedules()):
            return False
        self.deleted_schedules.add(schedule_id)
        return True

    # --- test runs --------------------------------------------------------------------------------

    def created_runs(self) -> Iterator[Record]:
        """The runs created through the API, newest first."""
        return (r.record for r in reversed(list(self.runs.values())))

    def create_run(self, body: Any) -> CreatedRun:
        """Validate a ``CreateTestRunRequest`` and start the run.

        :param body: the parsed JSON request body.
        :raises BadRequest: the request names an unknown app, test package or device group, or is malformed.
        """
        if not isinstance(body, dict):
            raise BadRequest("the request body must be a JSON object (CreateTestRunRequest)")
        app = self._find_app(body.get("app"))
        package = self._find_package(body.get("testPackage"))
        group = self._find_group(body)
        cron = body.get("schedule") or ""
        if not isinstance(cron, str) or (cron and not _CRON.match(cron.strip())):
            raise BadRequest(f"schedule must be '' (run now) or a cron expression, got {cron!r}")
        # the Bitrise start step sends them inside testPackage (no top-level field)
        nested = body.get("testPackage")
        params = (
            body.get("testScriptParameters")
            or (nested.get("testScriptParameters") if isinstance(nested, dict) else None)
            or ""
        )
        if not isinstance(params, str):
            raise BadRequest("testScriptParameters must be a string")
        schedule_id = self._add_schedule(cron.strip(), app) if cron else None
        serial = next(_serials)
        now = time.time()
        record: Record = {
            TEST_RUN_ID: str(uuid.uuid4()),
            "deviceGroup": group.record["deviceGroupId"],
            "operatingSystem": OS_CODES[app["operatingSystem"]],
            "appId": app["appId"],
            "appVersion": app["version"],
            "testPackageName": package["name"],
            "testPackageVersion": package["version"],
            TEST_RUN_SCHEDULED: iso_offset(now),
            "commitId": uuid.uuid4().hex + uuid.uuid4().hex[:8],
            "branch": None,
            "scheduleId": schedule_id,
            "cronSchedule": cron.strip() or None,
            "jobs": [],
        }
        devices = group.devices
        run = CreatedRun(
            record=record,
            devices=devices,
            fail=FAIL_MARKER in params.lower(),
            queue_seconds=self.queue_seconds,
            run_seconds=self.run_seconds,
            job_ids=[CREATED_JOB_ID_BASE + serial * 10 + k for k in range(len(devices))],
            created_wall=now,
        )
        self.runs[record[TEST_RUN_ID]] = run
        for k, job_id in enumerate(run.job_ids):
            self.jobs[job_id] = (run, k)
        return run

    def _find_app(self, spec: Any) -> Record:
        if not isinstance(spec, dict) or not spec.get("appId"):
            raise BadRequest("'app' must be an object with at least 'appId' (and 'version')")
        version = spec.get("version") or spec.get("appVersion")
        os_name = spec.get("operatingSystem")
        for app in reversed(self.applications()):
            if (
                app["appId"] == spec["appId"]
                and (version is None or str(version) in (app["version"], app["versionDisplayName"]))
                and (os_name is None or str(os_name).lower() == app["operatingSystem"].lower())
            ):
                return app
        known = sorted({f"{a['appId']} {a['version']} ({a['operatingSystem']})" for a in self.applications()})
        raise BadRequest(
            f"app {spec.get('appId')!r} version {version!r} ({os_name or 'any OS'}) is not uploaded to this "
            f"project; known apps: {'; '.join(known)}"
        )

    def _find_package(self, spec: Any) -> Record:
        if not isinstance(spec, dict) or not spec.get("name"):
            raise BadRequest("'testPackage' must be an object with 'name' and 'version'")
        for pkg in reversed(self.test_packages()):
            if pkg["name"] == spec["name"] and spec.get("version") in (None, pkg["version"]):
                return pkg
        known = sorted({f"{p['name']} {p['version']}" for p in self.test_packages()})
        raise BadRequest(
            f"test package {spec['name']!r} version {spec.get('version')!r} is not uploaded to this project; "
            f"known test packages: {'; '.join(known)}"
        )

    def _find_group(self, body: dict[str, Any]) -> DeviceGroup:
        key = body.get("deviceGroupId")
        obj = body.get("deviceGroup")
        if not key and isinstance(obj, dict):
            key = obj.get("deviceGroupId") or obj.get("name")
        if not key or not isinstance(key, str):
            raise BadRequest(
                "'deviceGroupId' (a device group GUID or name) or a 'deviceGroup' object is required"
            )
        group = self.data.device_group(key)
        if group is None and isinstance(obj, dict):
            group = self._ad_hoc_group(obj, body.get("app"))
        if group is None:
            known = "; ".join(
                f"{g.record['name']} ({g.record['deviceGroupId']})" for g in self.data.device_groups
            )
            raise BadRequest(f"device group {key!r} does not exist; known device groups: {known}")
        return group

    def _ad_hoc_group(self, obj: dict[str, Any], app: Any) -> DeviceGroup | None:
        """An ad-hoc group (the C# client's tag groups: a new GUID with its ``devices``), or ``None``."""
        group_id, devices = obj.get("deviceGroupId"), obj.get("devices")
        if (
            not isinstance(group_id, str)
            or not is_guid(group_id)
            or not isinstance(devices, list)
            or not devices
        ):
            return None
        selections = []
        for n, device in enumerate(devices):
            if not isinstance(device, dict):
                raise BadRequest("every device of an ad-hoc 'deviceGroup' must be an object")
            selection = {k: v for k, v in device.items() if v is not None}
            selection.setdefault("deviceSelectionId", str(uuid.uuid5(uuid.UUID(group_id), str(n))))
            selection.setdefault("name", selection.get("displayName") or f"device {n + 1}")
            selection.setdefault("tags", [])
            selection.setdefault("variables", {})
            selections.append(selection)
        record = {
            "deviceGroupId": group_id,
            "name": obj.get("name") or group_id,
            "displayName": obj.get("displayName") or obj.get("name") or group_id,
            "devices": selections,
            "variables": dict(obj.get("variables") or {}),
        }
        os_name = app.get("operatingSystem") if isinstance(app, dict) else None
        return DeviceGroup(record, IOS if str(os_name).lower() == "ios" else ANDROID)

    def _add_schedule(self, cron: str, app: Record) -> int:
        template = self.data.schedules[0]
        schedule_id = max(s["id"] for s in self.data.schedules + self.added_schedules) + 1
        now = iso_z(time.time())
        self.added_schedules.append(
            {
                **template,
                "id": schedule_id,
                "description": f"{app['displayName']} on cron {cron}",
                "cron": cron,
                "created_at": now,
                "updated_at": now,
                "last_pipeline": None,
            }
        )
        return schedule_id
