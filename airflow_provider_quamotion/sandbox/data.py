"""The sandbox's records: a fixed catalog and a history of test runs generated on the fly from a seed.

Nothing here holds the history in memory: run ``i`` and its jobs are computed from ``(seed, i)``,
its id encodes ``i`` (so a lookup by id is O(1)) and its ``scheduled`` time grows with ``i`` (so a
time window maps to an index range by bisection). Records are exactly what the API serves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import re
import struct
import time
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from airflow_provider_quamotion.api import (
    JOB_HAS_ARTIFACTS,
    JOB_ID,
    JOB_NAME,
    JOB_STATUS,
    PROJECT_NAME,
    PROJECT_RELATIVE_URL,
    TEST_RUN_ID,
    TEST_RUN_SCHEDULED,
    JobStatus,
)

ANDROID, IOS = "Android", "iOS"
OS_CODES = {ANDROID: 1, IOS: 2}
#: Historical job ids are ``JOB_ID_BASE + run_index * JOBS_PER_RUN_SLOT + k`` (k = device index).
JOB_ID_BASE = 50_000_000
JOBS_PER_RUN_SLOT = 10
#: A retried job's re-run has the id of its first attempt plus this (the slot's upper half).
RETRY_ID_OFFSET = 5
#: The most historical runs: every job id stays below 2**31 (the vendor's C# and Java clients model
#: job ids as 32-bit ``int``) and below the ids of jobs created through the API.
MAX_RUNS = 100_000_000
#: Every ``RETRIED_EVERY``-th run (index % 13 == 12) holds a retried attempt: its first device's job
#: canceled, then re-run passing under the same ``name``, as in the vendor's captured job list.
RETRIED_EVERY = 13
#: Every ``NULL_OS_EVERY``-th run (index % 11 == 10) has ``operatingSystem: null``, as captured.
NULL_OS_EVERY = 11
SCENARIOS = 8
_RUN_ID_RE = re.compile(r"^([0-9a-f]{8})-5a4d-4000-8000-([0-9a-f]{12})$")

Record = dict[str, Any]


def iso_offset(ts: float, *, offset: bool = True) -> str:
    """``2018-03-20T06:11:38+00:00`` (whole seconds, UTC); without ``+00:00`` when ``offset`` is false.

    :param ts: a POSIX timestamp.
    :param offset: whether to append the UTC offset.
    """
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    return text + "+00:00" if offset else text


def iso_z(ts: float) -> str:
    """``2018-03-19T13:15:43.239Z`` (milliseconds, UTC), the shape of a job's ``started``.

    :param ts: a POSIX timestamp.
    """
    ms = round(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def parse_time(value: float | str | dt.datetime) -> float:
    """A POSIX timestamp from a number, a numeric string, an ISO string or a datetime (naive = UTC).

    :param value: the time to convert.
    """
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else value
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return parsed.timestamp()


class _Draw:
    """Deterministic choices carved from one digest."""

    __slots__ = ("x",)

    def __init__(self, key: bytes, *parts: int) -> None:
        digest = hashlib.blake2b(struct.pack(f">{len(parts)}q", *parts), key=key, digest_size=32).digest()
        self.x = int.from_bytes(digest, "big")

    def below(self, n: int) -> int:
        self.x, r = divmod(self.x, n)
        return r


def _guid(key: bytes, *parts: int) -> str:
    digest = hashlib.blake2b(struct.pack(f">{len(parts)}q", *parts), key=key, digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


@dataclass(frozen=True)
class DeviceGroup:
    """A device group and the operating system of its devices.

    :param record: the ``DeviceGroup`` JSON record.
    :param operating_system: ``Android`` or ``iOS``.
    """

    record: Record
    operating_system: str

    @property
    def devices(self) -> list[Record]:
        """The group's devices (one job each per test run)."""
        return list(self.record["devices"])


class _Plan(NamedTuple):
    i: int
    ts: int
    app: Record
    package: Record
    group: DeviceGroup
    schedule: Record | None
    commit: str


_APPS: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("demo.quamotion.Acquaint", "Acquaint", "151", "1.51", ANDROID, "4.2", "armeabi-v7a"),
    ("demo.quamotion.Acquaint", "Acquaint", "151", "1.51", IOS, "9.0", "arm64"),
    ("com.example.shop", "Shop", "230", "2.3.0", ANDROID, "8.0", "arm64-v8a"),
    ("com.example.shop", "Shop", "230", "2.3.0", IOS, "11.0", "arm64"),
)
_PACKAGES = (
    ("quamotion-acquaint", "0.0.6", "Pester"),
    ("shop-smoke", "1.2.0", "PowerShellScript"),
    ("shop-regression", "3.1.4", "Pester"),
)
_GROUPS = (
    ("physical-android-8", "Physical Android 8 devices", ANDROID, ("Pixel 2", "Galaxy S8")),
    ("physical-ios-11", "Physical iOS 11 devices", IOS, ("iPhone 8", "iPhone X", "iPad Pro")),
    ("emulator-android", "Android emulator", ANDROID, ("Android Emulator x86",)),
    ("ios-regression", "iOS regression farm", IOS, ("iPhone 6s", "iPhone 7", "iPhone SE", "iPad Air 2")),
)
_SCHEDULES = (
    ("Nightly regression", "0 2 * * *"),
    ("Workday smoke tests", "30 6 * * 1-5"),
    ("Every six hours", "0 */6 * * *"),
)


def application(
    app_id: str, name: str, version: str, display_version: str, os_name: str, os_version: str, cpu: str
) -> Record:
    """An ``Application`` record.

    :param app_id: the bundle / package id.
    :param name: the display name.
    :param version: the build number.
    :param display_version: the marketing version.
    :param os_name: ``Android`` or ``iOS``.
    :param os_version: the minimum OS version.
    :param cpu: the CPU type.
    """
    return {
        "appId": app_id,
        "displayName": name,
        "version": version,
        "versionDisplayName": display_version,
        "operatingSystem": os_name,
        "operatingSystemVersion": os_version,
        "cpuType": cpu,
    }


def test_package(name: str, version: str, package_type: str) -> Record:
    """A ``TestPackage`` record.

    :param name: the package name.
    :param version: its version.
    :param package_type: ``Pester`` or ``PowerShellScript``.
    """
    return {"name": name, "version": version, "testPackageType": package_type}


test_package.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DataSettings:
    """What the generated data depends on.

    :param seed: the seed every record derives from.
    :param runs: how many historical test runs to generate.
    :param days: how many days before ``anchor`` the runs spread over.
    :param anchor: the POSIX time the history ends at (the server's start time by default).
    :param projects: how many projects the account sees.
    """

    seed: int = 0
    runs: int = 300
    days: float = 30.0
    anchor: float = field(default_factory=lambda: float(int(time.time())))
    projects: int = 1


class SandboxData:
    """The catalog and the generated history, computed from :class:`DataSettings`.

    :param settings: the seed, size and time span of the data.
    """

    def __init__(self, settings: DataSettings) -> None:
        if settings.runs < 0 or settings.days <= 0 or settings.projects < 1:
            raise ValueError("runs must be >= 0, days > 0 and projects >= 1")
        if settings.runs > MAX_RUNS:
            raise ValueError(f"runs must be <= {MAX_RUNS} (job ids must fit in 32 bits)")
        self.settings = settings
        self._key = hashlib.blake2b(str(settings.seed).encode(), digest_size=32).digest()
        self._tag = int.from_bytes(self._key[:4], "big")
        self._span = settings.days * 86400.0
        self._start = settings.anchor - self._span
        self.applications: list[Record] = [application(*a) for a in _APPS]
        self.test_packages: list[Record] = [test_package(*p) for p in _PACKAGES]
        self.device_groups: list[DeviceGroup] = [
            DeviceGroup(
                {
                    "deviceGroupId": _guid(self._key, -1, g),
                    "name": name,
                    "displayName": display,
                    "devices": [
                        {
                            "deviceSelectionId": _guid(self._key, -2, g, d),
                            "displayName": device,
                            "name": device,
                            "tags": [os_name.lower(), "emulator" if "Emulator" in device else "physical"],
                            "variables": {"DEVICE_MODEL": device},
                        }
                        for d, device in enumerate(devices)
                    ],
                    "variables": {},
                },
                os_name,
            )
            for g, (name, display, os_name, devices) in enumerate(_GROUPS)
        ]
        self._groups_by_os = {
            os_name: [g for g in self.device_groups if g.operating_system == os_name] for os_name in OS_CODES
        }
        self.schedules: list[Record] = [self._schedule(n, *s) for n, s in enumerate(_SCHEDULES)]
        self.projects: list[Record] = [
            {
                PROJECT_NAME: name,
                "tenantId": 22,
                "gitLabId": 4733645 + n,
                "flags": 0,
                PROJECT_RELATIVE_URL: f"/project/{name}/",
            }
            for n, name in enumerate(
                "sandbox" if n == 0 else f"sandbox-{n + 1}" for n in range(settings.projects)
            )
        ]

    # --- catalog ----------------------------------------------------------------------------------

    def _schedule(self, n: int, description: str, cron: str) -> Record:
        d = _Draw(self._key, -3, n)
        anchor = self.settings.anchor
        return {
            "id": 1001 + n,
            "description": description,
            "ref": "master",
            "cron": cron,
            "cron_timezone": "UTC",
            "next_run_at": iso_z(anchor + 3600 + d.below(86400)),
            "active": True,
            "created_at": iso_z(self._start - 86400 * (1 + d.below(90))),
            "updated_at": iso_z(self._start + d.below(86400)),
            "last_pipeline": {
                "id": 90000000 + d.below(1_000_000),
                "sha": hashlib.blake2b(
                    f"{self.settings.seed}:schedule:{n}".encode(), digest_size=20
                ).hexdigest(),
                "ref": "master",
                "status": "success",
            },
            "owner": {
                "id": 1,
                "name": "Sandbox User",
                "username": "sandbox",
                "state": "active",
                "avatar_url": None,
                "web_url": "https://gitlab.example/sandbox",
            },
        }

    def device_group(self, key: str) -> DeviceGroup | None:
        """The device group with this id or name, if any.

        :param key: a ``deviceGroupId`` GUID or a group ``name``.
        """
        for group in self.device_groups:
            if key.lower() == group.record["deviceGroupId"].lower() or key == group.record["name"]:
                return group
        return None

    def groups_for(self, os_name: str) -> list[DeviceGroup]:
        """The device groups of one operating system.

        :param os_name: ``Android`` or ``iOS``.
        """
        return self._groups_by_os.get(os_name, [])

    # --- history ----------------------------------------------------------------------------------

    def scheduled_ts(self, i: int) -> int:
        """Run ``i``'s scheduled time (POSIX seconds); non-decreasing in ``i``.

        :param i: the run index.
        """
        return self._ts(i, _Draw(self._key, 0, i))

    def _ts(self, i: int, d: _Draw) -> int:
        return int(self._start + self._span * (i + d.below(1 << 20) / (1 << 20)) / self.settings.runs)

    def _plan(self, i: int) -> _Plan:
        d = _Draw(self._key, 0, i)
        ts = self._ts(i, d)
        app = self.applications[d.below(len(self.applications))]
        package = self.test_packages[d.below(len(self.test_packages))]
        groups = self._groups_by_os[app["operatingSystem"]]
        group = groups[d.below(len(groups))]
        schedule = self.schedules[d.below(len(self.schedules))] if d.below(4) == 0 else None
        commit = hashlib.blake2b(struct.pack(">q", i), key=self._key, digest_size=20).hexdigest()
        return _Plan(i, ts, app, package, group, schedule, commit)

    def run_id(self, i: int) -> str:
        """The id of run ``i`` (it encodes the seed and the index).

        :param i: the run index.
        """
        return f"{self._tag:08x}-5a4d-4000-8000-{i:012x}"

    def run_index(self, run_id: str) -> int | None:
        """The index of a generated run, or ``None`` when the id is not one.

        :param run_id: a ``testRunId``.
        """
        m = _RUN_ID_RE.match(run_id.strip().lower())
        if not m or int(m.group(1), 16) != self._tag:
            return None
        i = int(m.group(2), 16)
        return i if i < self.settings.runs else None

    def run(self, i: int) -> Record:
        """Run ``i``'s ``TestRun`` record.

        :param i: the run index.
        """
        return self._run_record(self._plan(i))

    def _run_record(self, p: _Plan) -> Record:
        return {
            TEST_RUN_ID: self.run_id(p.i),
            "deviceGroup": p.group.record["deviceGroupId"],
            "operatingSystem": None
            if p.i % NULL_OS_EVERY == NULL_OS_EVERY - 1
            else OS_CODES[p.app["operatingSystem"]],
            "appId": p.app["appId"],
            "appVersion": p.app["version"],
            "testPackageName": p.package["name"],
            "testPackageVersion": p.package["version"],
            # the captured list omits the offset on every run (see docs/sandbox.md); written in UTC
            TEST_RUN_SCHEDULED: iso_offset(p.ts, offset=False),
            "commitId": p.commit,
            "branch": None,  # null in every captured run
            "scheduleId": p.schedule["id"] if p.schedule else None,
            "cronSchedule": p.schedule["cron"] if p.schedule else None,
            "jobs": [],
        }

    def jobs(self, i: int) -> list[Record]:
        """Run ``i``'s ``TestJob`` records, one per device of its device group.

        :param i: the run index.
        """
        return self._jobs_of(self._plan(i))

    def _jobs_of(self, p: _Plan) -> list[Record]:
        jobs = [self._job(p, k) for k in range(len(p.group.record["devices"]))]
        if self._retried(p):
            jobs.append(self._job(p, 0, rerun=True))
        return jobs

    @staticmethod
    def _retried(p: _Plan) -> bool:
        return p.i % RETRIED_EVERY == RETRIED_EVERY - 1

    def _job(self, p: _Plan, k: int, *, rerun: bool = False) -> Record:
        if rerun:
            first = self._job(p, k)
            rerun_at = parse_time(first["started"]) + (first["duration"] or 0) + 7.5
            return {
                **first,
                JOB_ID: first[JOB_ID] + RETRY_ID_OFFSET,
                JOB_STATUS: JobStatus.SUCCESS.value,
                "duration": round(first["duration"] + 41.3, 1),
                "started": iso_z(rerun_at),
                JOB_HAS_ARTIFACTS: True,
            }
        d = _Draw(self._key, 1, p.i, k)
        roll = d.below(100)
        status = (
            JobStatus.SUCCESS
            if roll < 80
            else JobStatus.FAILED
            if roll < 91
            else JobStatus.CANCELED
            if roll < 97
            else JobStatus.SKIPPED
        )
        started: str | None = iso_z(p.ts + 5 + d.below(115_000) / 1000)
        duration: float | None = round(30 + d.below(5700) / 10, 1)
        if k == 0 and self._retried(p):
            status = JobStatus.CANCELED
        if status is JobStatus.SKIPPED:
            started, duration = None, None
        elif status is JobStatus.CANCELED:
            duration = round(30 + d.below(5700) / 40, 1)
        return {
            JOB_ID: JOB_ID_BASE + p.i * JOBS_PER_RUN_SLOT + k,
            JOB_NAME: p.group.record["devices"][k]["deviceSelectionId"],
            JOB_STATUS: status.value,
            "duration": duration,
            "started": started,
            "commitId": p.commit,
            JOB_HAS_ARTIFACTS: status in (JobStatus.SUCCESS, JobStatus.FAILED),
        }

    def job(self, job_id: int) -> tuple[Record, Record, Record] | None:
        """A generated job, its run and its device, or ``None`` when the id is not one.

        :param job_id: a job ``id``.
        """
        i, k = divmod(job_id - JOB_ID_BASE, JOBS_PER_RUN_SLOT)
        if job_id < JOB_ID_BASE or i >= self.settings.runs:
            return None
        p = self._plan(i)
        devices = p.group.record["devices"]
        rerun = k >= RETRY_ID_OFFSET
        k -= RETRY_ID_OFFSET if rerun else 0
        if k >= len(devices) or (rerun and not (k == 0 and self._retried(p))):
            return None
        return self._job(p, k, rerun=rerun), self._run_record(p), devices[k]

    def index_range(self, since: float | None = None, until: float | None = None) -> range:
        """The indexes of the runs scheduled in ``[since, until)`` (POSIX seconds; ``None`` = open).

        :param since: the window's inclusive start.
        :param until: the window's exclusive end.
        """
        n = self.settings.runs
        lo = 0 if since is None else self._bisect(since)
        hi = n if until is None else self._bisect(until)
        return range(lo, max(lo, hi))

    def _bisect(self, ts: float) -> int:
        """The first index whose scheduled time is >= ``ts``."""
        lo, hi = 0, self.settings.runs
        while lo < hi:
            mid = (lo + hi) // 2
            if self.scheduled_ts(mid) < ts:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def iter_runs(self, indexes: range | None = None) -> Iterator[Record]:
        """Generated runs in index (= time) order.

        :param indexes: which runs; all by default.
        """
        for i in indexes if indexes is not None else range(self.settings.runs):
            yield self.run(i)

    def iter_jobs(self, indexes: range | None = None) -> Iterator[tuple[Record, Record]]:
        """``(run, job)`` pairs of the generated runs, in run order then device order.

        :param indexes: which runs; all by default.
        """
        for i in indexes if indexes is not None else range(self.settings.runs):
            p = self._plan(i)
            run = self._run_record(p)
            for job in self._jobs_of(p):
                yield run, job


# --- logs and artifacts (shared by generated and created jobs) ------------------------------------


def job_log_lines(job: Record, run: Record, device: Record, *, progress: float = 1.0) -> list[str]:
    """A job's plain-text log; a running job (``progress`` < 1) shows only the lines written so far.

    :param job: the ``TestJob`` record.
    :param run: its ``TestRun`` record.
    :param device: the device it ran on.
    :param progress: how far the job is, 0..1.
    """
    status = job[JOB_STATUS]
    head = [
        f"Quamotion sandbox runner: job {job[JOB_ID]} of test run {run[TEST_RUN_ID]}",
        f"Device: {device.get('displayName') or device.get('name')} ({device['deviceSelectionId']})",
        f"Installing {run['appId']} {run['appVersion']}",
        f"Running test package {run['testPackageName']} {run['testPackageVersion']}",
    ]
    if status in (JobStatus.SKIPPED.value, JobStatus.CREATED.value, JobStatus.PENDING.value):
        return [*head[:1], f"Job {status}"] if progress >= 1 else head[:1]
    failing = SCENARIOS - 1 if status == JobStatus.FAILED.value else -1
    body = [
        f"Scenario {n + 1}/{SCENARIOS}: {'FAILED: element not found' if n == failing else 'passed'}"
        for n in range(SCENARIOS)
    ]
    lines = head + body
    if progress < 1:
        return lines[: max(1, int(len(lines) * progress))]
    return [*lines, f"Job finished: {status}"]


def _png() -> bytes:
    """A tiny valid PNG (a 1x1 grey pixel), standing in for a screenshot."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def artifacts_zip(job: Record, log_text: str) -> bytes:
    """The zip of a job's artifacts: its log, a JUnit report and a screenshot.

    :param job: the ``TestJob`` record.
    :param log_text: its log.
    """
    failed = job[JOB_STATUS] == JobStatus.FAILED.value
    cases = "".join(
        f'<testcase name="Scenario {n + 1}">'
        + ("<failure message='element not found'/>" if failed and n == SCENARIOS - 1 else "")
        + "</testcase>"
        for n in range(SCENARIOS)
    )
    report = (
        f'<?xml version="1.0" encoding="utf-8"?><testsuite name="job-{job[JOB_ID]}" tests="{SCENARIOS}" '
        f'failures="{int(failed)}">{cases}</testsuite>'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("log.txt", log_text)
        zf.writestr("results.xml", report)
        zf.writestr("screenshots/final.png", _png())
    return buf.getvalue()
