"""QuamotionHook and its async twin: connection -> settings -> authenticated client, plus resource methods.

Nothing here touches the network, builds an msal application or reads the connection until a method
that needs it runs. The auth lives in :mod:`airflow_provider_quamotion.auth`, the request policy in
:mod:`airflow_provider_quamotion.transport` and the API's shape in :mod:`airflow_provider_quamotion.api`.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_quamotion import CONN_TYPE, api, compat
from airflow_provider_quamotion.auth import CachedTokenProvider, token_provider
from airflow_provider_quamotion.compat import BaseHook
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionError,
    QuamotionNotFoundError,
    QuamotionResponseError,
)
from airflow_provider_quamotion.logs import LineSplitter
from airflow_provider_quamotion.settings import QuamotionSettings, settings_from_connection
from airflow_provider_quamotion.transport.aio import AsyncQuamotionClient, ssl_context
from airflow_provider_quamotion.transport.jsonio import (
    MAX_BODY_BYTES,
    QuamotionResponseTooLargeError,
    iter_body,
    iter_json_records,
    parse_json,
    read_body,
    read_json_or_text,
)
from airflow_provider_quamotion.transport.sync import QuamotionSession
from airflow_provider_quamotion.uploads import MultipartFile

if TYPE_CHECKING:
    import requests

DEFAULT_CONN_ID = "quamotion_default"
COPY_CHUNK_BYTES = 1024 * 1024
#: The largest job log :meth:`QuamotionHook.get_job_log` returns as a string.
MAX_LOG_BYTES = 64 * 1024 * 1024
#: The most bytes of a job's live log :meth:`QuamotionHook.stream_job_log` reads by default.
LIVE_LOG_MAX_BYTES = 1024 * 1024


def _settings_of(conn: Any, conn_id: str, overrides: Mapping[str, Any]) -> QuamotionSettings:
    return settings_from_connection(
        conn_id=conn_id,
        host=conn.host,
        login=conn.login,
        password=conn.password,
        extra=conn.extra,
        port=conn.port,
        overrides=overrides,
    )


# --- apps, packages and device groups given by name ------------------------------------------------

APP_ID = "appId"
APP_DISPLAY_NAME = "displayName"
APP_VERSION = "version"
APP_OS = "operatingSystem"
PACKAGE_NAME = "name"
PACKAGE_VERSION = "version"
GROUP_DISPLAY_NAME = "displayName"


def _split_version(ref: str) -> tuple[str, str | None]:
    name, sep, version = ref.rpartition(":")
    return (name, version) if sep and name and version else (ref, None)


def _ambiguous(kind: str, ref: str, candidates: Sequence[str], hint: str) -> QuamotionConfigError:
    return QuamotionConfigError(
        f"The {kind} {ref!r} is ambiguous: {len(candidates)} match ({', '.join(candidates[:10])}"
        f"{', ...' if len(candidates) > 10 else ''}). {hint}"
    )


def _absent(kind: str, ref: str, known: Sequence[str]) -> QuamotionNotFoundError:
    listed = ", ".join(sorted(set(known))[:20]) or "none"
    return QuamotionNotFoundError(f"No {kind} matches {ref!r} in this project. Known: {listed}.", status=404)


def resolve_application(ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An application record from a dict (used as given) or a name.

    A name matches ``appId`` or ``displayName``; ``"name:version"`` also matches ``version`` or
    ``versionDisplayName``.

    :param ref: the application as a dict or a name.
    :param records: the project's applications (``GET app``).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several match (several versions or operating systems).
    """
    if isinstance(ref, Mapping):
        return dict(ref)
    name, version = _split_version(str(ref).strip())
    matches = [
        r
        for r in records
        if name in (r.get(APP_ID), r.get(APP_DISPLAY_NAME))
        and (version is None or version in (str(r.get(APP_VERSION)), str(r.get("versionDisplayName"))))
    ]
    if not matches:
        raise _absent("application", str(ref), [str(r.get(APP_ID)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "application",
            str(ref),
            [f"{r.get(APP_ID)} {r.get(APP_VERSION)} ({r.get(APP_OS)})" for r in matches],
            "Pass the application as a dict (e.g. the upload operator's result) or as 'appId:version'.",
        )
    return dict(matches[0])


def resolve_test_package(
    ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """A test package record from a dict (used as given) or ``"name"`` / ``"name:version"``.

    :param ref: the test package as a dict or a name.
    :param records: the project's test packages (``GET testPackage``).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several versions match.
    """
    if isinstance(ref, Mapping):
        return dict(ref)
    name, version = _split_version(str(ref).strip())
    matches = [
        r
        for r in records
        if r.get(PACKAGE_NAME) == name and (version is None or str(r.get(PACKAGE_VERSION)) == version)
    ]
    if not matches:
        raise _absent("test package", str(ref), [str(r.get(PACKAGE_NAME)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "test package",
            str(ref),
            [f"{r.get(PACKAGE_NAME)} {r.get(PACKAGE_VERSION)}" for r in matches],
            "Pass it as 'name:version' or as a dict.",
        )
    return dict(matches[0])


def device_group_matches(key: str, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The device groups ``key`` names: by ``deviceGroupId`` (any case) first, else by name or display name.

    :param key: an id, a name or a display name.
    :param records: the project's device groups (``GET deviceGroup``).
    """
    groups = [g for g in records if isinstance(g, Mapping)]
    by_id = [g for g in groups if str(g.get(api.DEVICE_GROUP_ID, "")).lower() == key.lower()]
    named = by_id or [g for g in groups if key in (g.get(api.DEVICE_GROUP_NAME), g.get(GROUP_DISPLAY_NAME))]
    return [dict(g) for g in named]


def resolve_device_group(
    ref: Mapping[str, Any] | str, records: Sequence[Mapping[str, Any]] | None
) -> dict[str, Any]:
    """A device group from a dict with a ``deviceGroupId`` (used as given) or an id / name / display name.

    :param ref: the device group as a dict or a string.
    :param records: the project's device groups (``GET deviceGroup``); ``None`` when ``ref`` is a dict
        with an id (no lookup needed).
    :raises QuamotionNotFoundError: nothing matches.
    :raises QuamotionConfigError: several match.
    """
    if isinstance(ref, Mapping) and ref.get(api.DEVICE_GROUP_ID):
        return dict(ref)
    key = str(ref.get(api.DEVICE_GROUP_NAME) if isinstance(ref, Mapping) else ref).strip()
    records = records or []
    matches = device_group_matches(key, records)
    if not matches:
        raise _absent("device group", key, [str(r.get(api.DEVICE_GROUP_NAME)) for r in records])
    if len(matches) > 1:
        raise _ambiguous(
            "device group",
            key,
            [f"{r.get(api.DEVICE_GROUP_NAME)} ({r.get(api.DEVICE_GROUP_ID)})" for r in matches],
            "Pass its deviceGroupId.",
        )
    return matches[0]


class _QuamotionHookBase(BaseHook):
    """What both hooks share: the connection type and how settings overrides are kept."""

    conn_name_attr = "quamotion_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Quamotion Cloud"

    def __init__(self, quamotion_conn_id: str = DEFAULT_CONN_ID, **settings: Any) -> None:
        super().__init__()
        self.quamotion_conn_id = quamotion_conn_id
        self._overrides = settings


class QuamotionHook(_QuamotionHookBase):
    """Talk to Quamotion Cloud with an Airflow connection of type ``quamotion``.

    Tokens come from Azure AD client credentials (MSAL) or an API key, cached per process and
    credentials, and renewed before expiry or on a 401. Every call follows one transport policy:
    retries with ``Retry-After``, TLS, proxies, timeouts, and the bearer sent only to the connection's
    own origin over https.

    :param quamotion_conn_id: the Airflow connection ID.
    :param settings: per-hook overrides of the connection's settings, e.g. ``timeout=30``,
        ``project="acme"``, ``retry=RetryPolicy(max_attempts=3)``.
    """

    def __init__(self, quamotion_conn_id: str = DEFAULT_CONN_ID, **settings: Any) -> None:
        self._pool_size = int(settings.pop("pool_size", 32))
        super().__init__(quamotion_conn_id, **settings)

    if not compat.DECLARATIVE_CONNECTION_FORM:
        # Airflow 3.0/3.1 read the connection form only from these methods; 3.2+ reads the provider info's
        # conn-fields and ui-field-behaviour (the one source of both) and would warn about the methods.

        @classmethod
        def get_connection_form_widgets(cls) -> dict[str, Any]:
            """The connection form's extra fields (Airflow 3.0/3.1): the provider info's ``conn-fields``."""
            return compat.connection_form_widgets()

        @classmethod
        def get_ui_field_behaviour(cls) -> dict[str, Any]:
            """Hidden, relabelled and placeholder fields (Airflow 3.0/3.1): the ``ui-field-behaviour``."""
            return compat.connection_ui_field_behaviour()

    # connection -> settings -> client ------------------------------------------------------------

    @cached_property
    def settings(self) -> QuamotionSettings:
        """The connection's validated settings (read on first use)."""
        return _settings_of(
            self.get_connection(self.quamotion_conn_id), self.quamotion_conn_id, self._overrides
        )

    @cached_property
    def token_provider(self) -> CachedTokenProvider:
        """Tokens for these settings, from the process-wide cache."""
        return token_provider(self.settings)

    def get_conn(self) -> QuamotionSession:
        """A pooled ``requests.Session`` whose calls carry and renew the bearer and follow the policy."""
        return self._session

    def async_twin(self, pool_size: int) -> QuamotionAsyncHook:
        """An async hook on this hook's settings and tokens (no second read of the connection), for
        requests this hook fans out on an event loop of its own (the jobs export).

        :param pool_size: connections and requests in flight of the twin's pool.
        """
        twin = QuamotionAsyncHook(self.quamotion_conn_id, **self._overrides)
        twin._client = AsyncQuamotionClient(self.settings, self.token_provider, pool_size=pool_size)
        return twin

    @cached_property
    def _session(self) -> QuamotionSession:
        return QuamotionSession(self.settings, self.token_provider, pool_size=self._pool_size)

    def get_token(self) -> str:
        """A current bearer token (cached per process). Never log it."""
        return self.token_provider.get_token()

    def close(self) -> None:
        """Close pooled connections."""
        if "_session" in self.__dict__:
            self._session.close()
            del self.__dict__["_session"]

    # requests ----------------------------------------------------------------------------------------

    def url_for(self, endpoint: str) -> str:
        """The absolute URL of ``endpoint`` (looks the project up for project-relative ones)."""
        return self.get_conn().url_for(endpoint)

    def request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        """Call ``endpoint`` and return the reply; non-2xx replies raise typed errors.

        :param method: HTTP method.
        :param endpoint: ``"testRun"`` (project-relative), ``"/api/version"`` (host root), or an
            absolute URL on the connection's own origin.
        :param kwargs: passed to ``requests`` (``params``, ``json``, ``data``, ``files``, ``headers``,
            ``stream``...).
        """
        return self.get_conn().request(method, endpoint, **kwargs)

    def get_json(self, endpoint: str, *, max_bytes: int = MAX_BODY_BYTES, **kwargs: Any) -> Any:
        """GET ``endpoint`` and parse its JSON (a clear error when the reply is not JSON).

        The body is read within ``max_bytes`` and, with ``deadline=`` (epoch seconds), by that time
        (else within the connection's timeout); a larger list is better streamed (:meth:`iter_records`).

        :param endpoint: as for :meth:`request`.
        :param max_bytes: the byte budget of the body.
        :param kwargs: passed to :meth:`request` (``params``, ``deadline``...).
        """
        deadline = kwargs.get("deadline")
        response = self.request("GET", endpoint, stream=True, **kwargs)
        body_deadline = time.time() + self.settings.timeout
        return parse_json(
            response,
            max_bytes=max_bytes,
            deadline=body_deadline if deadline is None else min(deadline, body_deadline),
        )

    def list_records(self, endpoint: str, **kwargs: Any) -> list[Any]:
        """GET a list endpoint; accepts a bare array or ``{"value": [...]}``."""
        payload = self.get_json(endpoint, **kwargs)
        try:
            return api.unwrap_list(payload)
        except TypeError as err:
            raise QuamotionError(f"GET {endpoint}: {err}") from None

    def iter_records(
        self, endpoint: str, *, params: Mapping[str, Any] | None = None, record_path: str | None = None
    ) -> Iterator[Any]:
        """Stream a list endpoint's records, parsed incrementally (constant memory for any size).

        :param endpoint: the list endpoint.
        :param params: query parameters.
        :param record_path: dotted path of the array inside the reply (default: the reply itself or
            its ``value``).
        """
        response = self.request("GET", endpoint, params=params, stream=True)
        return iter_json_records(response, record_path)

    # resources ---------------------------------------------------------------------------------------

    def get_version(self) -> Any:
        """``GET /api/version``: the service's version (JSON, or text when it is not JSON)."""
        response = self.request("GET", api.VERSION, stream=True)
        return read_json_or_text(
            response, max_bytes=MAX_BODY_BYTES, deadline=time.time() + self.settings.timeout
        )

    def list_projects(self) -> list[dict[str, Any]]:
        """The projects this account sees."""
        return self.list_records(api.PROJECTS)

    def list_applications(self) -> list[dict[str, Any]]:
        """The project's applications."""
        return self.list_records(api.APPLICATIONS)

    def upload_application(self, path: str | os.PathLike[str] | Any) -> dict[str, Any]:
        """Upload an .apk or .ipa (a local path or an ``ObjectStoragePath``), streamed; returns the item."""
        return self._upload(api.APPLICATIONS, path)

    def list_test_packages(self) -> list[dict[str, Any]]:
        """The project's test packages."""
        return self.list_records(api.TEST_PACKAGES)

    def upload_test_package(self, path: str | os.PathLike[str] | Any) -> dict[str, Any]:
        """Upload a test package (a local path or an ``ObjectStoragePath``), streamed; returns the item."""
        return self._upload(api.TEST_PACKAGES, path)

    def _upload(self, endpoint: str, path: str | os.PathLike[str] | Any) -> dict[str, Any]:
        with MultipartFile.open(path, field=api.UPLOAD_FILE_FIELD) as body:
            response = self.request("POST", endpoint, data=body, headers={"Content-Type": body.content_type})
        items = api.unwrap_list(parse_json(response))
        if not items:
            raise QuamotionError(f"POST {endpoint}: the upload of {body.filename!r} returned no item.")
        return dict(items[0])

    def list_device_groups(self) -> list[dict[str, Any]]:
        """The project's device groups."""
        return self.list_records(api.DEVICE_GROUPS)

    def list_test_runs(self) -> list[dict[str, Any]]:
        """Every test run (the API does not page). For large accounts prefer :meth:`iter_test_runs`."""
        return self.list_records(api.TEST_RUNS)

    def iter_test_runs(self) -> Iterator[dict[str, Any]]:
        """Every test run, streamed."""
        return self.iter_records(api.TEST_RUNS)

    def get_test_run(self, test_run_id: str) -> dict[str, Any]:
        """One test run (the API has no GET by id: the list is streamed and filtered)."""
        for run in self.iter_test_runs():
            if isinstance(run, Mapping) and run.get(api.TEST_RUN_ID) == test_run_id:
                return dict(run)
        raise QuamotionNotFoundError(
            f"Test run {test_run_id!r} does not exist in this project. Check the id (XCom of the task that "
            "started it) and the connection's project.",
            status=404,
        )

    def start_test_run(
        self,
        app: Mapping[str, Any],
        test_package: Mapping[str, Any],
        device_group: Mapping[str, Any] | str,
        *,
        parameters: str = "",
        environment: Mapping[str, str] | None = None,
        schedule: str = "",
        results_callback: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Start a test run (``POST testRun``; never repeated by a retry once it may have arrived).

        The request names the device group twice, as ``deviceGroupId`` and as a whole
        ``deviceGroup`` object (see :func:`api.create_test_run_request`). Given only an id or a name, the
        group's record is looked up in ``GET deviceGroup`` to fill the object; a group the list does
        not hold (an ad-hoc group, a name only the service resolves) is sent as given.

        :param app: the application record (or ``operatingSystem``, ``appId``, ``version``).
        :param test_package: the test package (``name``, ``version``).
        :param device_group: the device group record, or its id (or name).
        :param parameters: test script parameters.
        :param environment: test script environment variables.
        :param schedule: ``""`` to run now, or a cron string for a recurring run.
        :param results_callback: ``{"apiKey", "endPoint"}`` to be called back with results; omitted
            from the request when not given.
        """
        group: Mapping[str, Any] | str = device_group
        if not isinstance(device_group, Mapping):
            group = self._device_group_record(str(device_group)) or str(device_group)
        body = api.create_test_run_request(
            app,
            test_package,
            group,
            parameters=parameters,
            environment=environment,
            schedule=schedule,
            results_callback=results_callback,
        )
        run = parse_json(self.request("POST", api.TEST_RUNS, json=body))
        if not isinstance(run, Mapping) or not run.get(api.TEST_RUN_ID):
            raise QuamotionError(f"POST testRun returned no {api.TEST_RUN_ID}: {json.dumps(run)[:200]}")
        return dict(run)

    def _device_group_record(self, key: str) -> dict[str, Any] | None:
        """The one device group ``key`` names (see :func:`device_group_matches`), or ``None``."""
        matches = device_group_matches(key, self.list_device_groups())
        return matches[0] if len(matches) == 1 else None

    def resolve_application(self, ref: Mapping[str, Any] | str) -> dict[str, Any]:
        """The application ``ref`` names: a dict is used as given, a name is looked up in ``GET app``.

        :param ref: a dict (e.g. the upload operator's result), an ``appId`` or display name, or
            ``"name:version"``.
        :raises QuamotionNotFoundError: nothing matches.
        :raises QuamotionConfigError: several match.
        """
        return resolve_application(ref, [] if isinstance(ref, Mapping) else self.list_applications())

    def resolve_test_package(self, ref: Mapping[str, Any] | str) -> dict[str, Any]:
        """The test package ``ref`` names: a dict as given, ``"name"`` / ``"name:version"`` looked up.

        :param ref: the test package as a dict or a name.
        :raises QuamotionNotFoundError: nothing matches.
        :raises QuamotionConfigError: several versions match.
        """
        return resolve_test_package(ref, [] if isinstance(ref, Mapping) else self.list_test_packages())

    def resolve_device_group(self, ref: Mapping[str, Any] | str) -> dict[str, Any]:
        """The device group ``ref`` names: a dict with a ``deviceGroupId`` as given, else looked up.

        :param ref: a dict, a ``deviceGroupId`` (any case), a name or a display name.
        :raises QuamotionNotFoundError: nothing matches.
        :raises QuamotionConfigError: several match.
        """
        known = isinstance(ref, Mapping) and ref.get(api.DEVICE_GROUP_ID)
        return resolve_device_group(ref, None if known else self.list_device_groups())

    def list_jobs(self, test_run_id: str, *, deadline: float | None = None) -> list[dict[str, Any]]:
        """A test run's jobs (empty while it is queued); a malformed reply is a ``QuamotionResponseError``.

        :param deadline: an absolute time (epoch seconds) the call, its retries included, must not outlive.
        """
        endpoint = api.test_run_jobs(test_run_id)
        return api.jobs_from_reply(self.get_json(endpoint, deadline=deadline), f"GET {endpoint}")

    def get_job(self, job_id: int | str) -> dict[str, Any]:
        """One job."""
        job = self.get_json(api.job(job_id))
        if not isinstance(job, Mapping):
            raise QuamotionError(f"GET job/{job_id} did not return an object")
        return dict(job)

    def get_job_log(self, job_id: int | str, *, max_bytes: int = MAX_LOG_BYTES) -> str:
        """A job's plain-text log, at most ``max_bytes`` (larger logs: :meth:`download_job_log`).

        :param job_id: the job's id.
        :param max_bytes: the byte budget of the log.
        """
        response = self.request("GET", api.job_log(job_id), stream=True)
        body = read_body(response, max_bytes=max_bytes, deadline=time.time() + self.settings.timeout)
        return body.decode(response.encoding or "utf-8", errors="replace")

    def stream_job_log(
        self,
        job_id: int | str,
        *,
        max_bytes: int = LIVE_LOG_MAX_BYTES,
        deadline: float | None = None,
    ) -> Iterator[str]:
        """Follow a job's log live (``GET job/{id}/log/live``), yielding each line as it arrives.

        The service keeps the reply open while the job runs and ends it when the job ends (the
        vendor's Bitrise step follows it with wget). Lines come without their line break, decoded
        as UTF-8 (undecodable bytes replaced). At most ``max_bytes`` of the body are read
        (:func:`~airflow_provider_quamotion.transport.jsonio.iter_body`): past the budget the stream
        is closed and a last partial line, if any, is yielded cut. The request is sent when
        iteration starts; close the generator to stop following early.

        :param job_id: the job.
        :param max_bytes: the most bytes of log read (the budget: a chatty job cannot fill memory or
            the task log).
        :param deadline: an absolute time (epoch seconds): the request, its retries and the reading
            stop there; the lines complete by then were yielded.
        :raises QuamotionTimeoutError: at ``deadline`` (``None``: each read waits up to the
            connection's timeout).
        """
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        response = self.request("GET", api.job_log(job_id, live=True), stream=True, deadline=deadline)
        lines = LineSplitter()
        try:
            for chunk in iter_body(response, max_bytes=max_bytes, deadline=deadline):
                yield from lines.feed(chunk)
        except QuamotionResponseTooLargeError:
            self.log.info("Live log of job %s cut at its budget of %d bytes.", job_id, max_bytes)
        yield from lines.end()

    def download_job_log(self, job_id: int | str, destination: str | os.PathLike[str] | Any) -> str:
        """Stream a job's log to a local path or ``ObjectStoragePath``; returns the destination."""
        return self._download(api.job_log(job_id), destination)

    def download_job_artifacts(self, job_id: int | str, destination: str | os.PathLike[str] | Any) -> str:
        """Stream a job's artifacts zip to a local path or ``ObjectStoragePath``; returns the destination."""
        return self._download(api.job_artifacts(job_id), destination)

    def download(
        self, endpoint: str, destination: str | os.PathLike[str] | Any, *, method: str = "GET", **kwargs: Any
    ) -> str:
        """Stream any endpoint's body to a local path or ``ObjectStoragePath``, atomically.

        The body goes to a temporary object beside the destination, moved into place when complete:
        a failed download leaves nothing behind.

        :param method: the HTTP method (``GET`` by default; retried per the transport's policy).
        :param kwargs: passed to :meth:`request` (``params``, ``json``, ``data``, ``headers``).
        """
        return self._download(endpoint, destination, method=method, **kwargs)

    def _download(
        self, endpoint: str, destination: str | os.PathLike[str] | Any, *, method: str = "GET", **kwargs: Any
    ) -> str:
        from airflow_provider_quamotion.storage import atomic_writer

        with (
            self.request(method, endpoint, stream=True, **kwargs) as response,
            atomic_writer(destination) as out,
        ):
            response.raw.decode_content = True
            shutil.copyfileobj(response.raw, out, COPY_CHUNK_BYTES)
        return str(destination)

    def list_schedules(self) -> list[dict[str, Any]]:
        """The project's test run schedules."""
        return self.list_records(api.SCHEDULES)

    def delete_schedule(self, schedule_id: int | str) -> None:
        """Delete a schedule."""
        self.request("DELETE", api.schedule(schedule_id))

    # Airflow UI / CLI --------------------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """Get a token and call ``/api/version``: what the UI's Test button and ``airflow connections test`` show."""
        try:
            version = self.get_version()
        except (QuamotionError, QuamotionConfigError) as err:
            return False, str(err)
        except Exception as err:  # the UI must show a message, whatever failed
            return False, f"{type(err).__name__}: {err}"
        shown = json.dumps(version)[:120] if not isinstance(version, str) else version[:120]
        return True, f"Connected to Quamotion Cloud at {self.settings.base_url} (version {shown})."


class QuamotionAsyncHook(_QuamotionHookBase):
    """The async twin of :class:`QuamotionHook`, for triggers: same settings, auth, policy and errors.

    The connection is read with ``aget_connection``; tokens come from the same process-wide cache
    without blocking the event loop.

    :param quamotion_conn_id: the Airflow connection ID.
    :param settings: per-hook overrides of the connection's settings.
    """

    def __init__(self, quamotion_conn_id: str = DEFAULT_CONN_ID, **settings: Any) -> None:
        super().__init__(quamotion_conn_id, **settings)
        self._client: AsyncQuamotionClient | None = None
        self._client_lock: asyncio.Lock | None = None

    async def client(self) -> AsyncQuamotionClient:
        """The async client (reads the connection on first use, once however many callers wait)."""
        if self._client is None:
            if self._client_lock is None:
                self._client_lock = asyncio.Lock()
            async with self._client_lock:
                if self._client is None:
                    conn = await compat.aget_connection(self, self.quamotion_conn_id)
                    settings = _settings_of(conn, self.quamotion_conn_id, self._overrides)
                    # loading a CA bundle costs milliseconds of CPU: once per process, off the loop
                    await asyncio.to_thread(ssl_context, settings.verify)
                    self._client = AsyncQuamotionClient(settings, token_provider(settings))
        return self._client

    async def aclose(self) -> None:
        """Release the pooled connections (the shared pool closes when its last user closes)."""
        if self._client is not None:
            await self._client.aclose()

    async def request(
        self, method: str, endpoint: str, *, deadline: float | None = None, **kwargs: Any
    ) -> Any:
        """Call ``endpoint``; returns the :class:`~airflow_provider_quamotion.transport.aio.AsyncReply`;
        non-2xx replies raise typed errors.

        :param deadline: an absolute time (epoch seconds): retries, their waits and each attempt's
            timeout stay within it (see :meth:`AsyncQuamotionClient.request`).
        """
        return await (await self.client()).request(method, endpoint, deadline=deadline, **kwargs)

    async def get_json(self, endpoint: str, *, deadline: float | None = None, **kwargs: Any) -> Any:
        """GET ``endpoint`` and parse its JSON."""
        return parse_json(await self.request("GET", endpoint, deadline=deadline, **kwargs))

    async def list_records(self, endpoint: str, *, deadline: float | None = None) -> list[Any]:
        """GET a list endpoint; accepts a bare array or ``{"value": [...]}``.

        :param endpoint: the list endpoint (``api.TEST_RUNS``, ``api.DEVICE_GROUPS``...).
        :param deadline: an absolute time (epoch seconds) the call must not outlive.
        """
        payload = await self.get_json(endpoint, deadline=deadline)
        try:
            return api.unwrap_list(payload)
        except TypeError as err:
            raise QuamotionError(f"GET {endpoint}: {err}") from None

    async def list_jobs(self, test_run_id: str, *, deadline: float | None = None) -> list[dict[str, Any]]:
        """A test run's jobs."""
        endpoint = api.test_run_jobs(test_run_id)
        return api.jobs_from_reply(await self.get_json(endpoint, deadline=deadline), f"GET {endpoint}")

    async def stream_job_log(
        self, job_id: int | str, *, max_bytes: int = LIVE_LOG_MAX_BYTES, deadline: float | None = None
    ) -> AsyncIterator[str]:
        """The async twin of :meth:`QuamotionHook.stream_job_log`: a job's live log, line by line.

        Streamed through the shared ``aiohttp`` pool, the body bounded as it is read (``max_bytes``
        and the deadline, :func:`~airflow_provider_quamotion.transport.jsonio.abounded_body`). Close
        the generator (``contextlib.aclosing``) to stop following early.

        :param job_id: the job.
        :param max_bytes: the most bytes of log read; past them the stream ends (a last partial line
            is yielded cut).
        :param deadline: an absolute time (epoch seconds) the request and the reading stop at.
        :raises QuamotionTimeoutError: at ``deadline``.
        """
        import aiohttp

        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        response = await self.request(
            "GET", api.job_log(job_id, live=True), deadline=deadline, stream=True, max_bytes=max_bytes
        )
        lines = LineSplitter()
        try:
            async for chunk in response.aiter_bytes():
                for line in lines.feed(chunk):
                    yield line
        except QuamotionResponseTooLargeError:
            self.log.info("Live log of job %s cut at its budget of %d bytes.", job_id, max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QuamotionResponseError(f"GET job/{job_id}/log/live: the stream broke off ({exc}).") from exc
        finally:
            await response.aclose()
        for line in lines.end():
            yield line
