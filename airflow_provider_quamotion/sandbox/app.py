"""The sandbox's ASGI application: the Quamotion Cloud API, the Azure AD emulator and the admin API.

Middleware, outermost first: counters and fault injection, then bearer authentication (skipped for
the AD routes, ``POST /api/login`` and ``/_sandbox/``), then the Starlette routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_provider_quamotion import __version__, api
from airflow_provider_quamotion.sandbox.ad import build_ad_routes, is_ad_path
from airflow_provider_quamotion.sandbox.context import SandboxContext
from airflow_provider_quamotion.sandbox.data import Record, artifacts_zip, iso_offset, job_log_lines
from airflow_provider_quamotion.sandbox.faults import DROP, RETRY_AFTER_STATUSES, Decision, FaultConfig
from airflow_provider_quamotion.sandbox.store import BadRequest, ProjectStore
from airflow_provider_quamotion.sandbox.tokens import InvalidToken

ADMIN_PREFIX = "/_sandbox/"
PROJECT_API = "/project/{project}/api/"
#: Records per chunk of a streamed JSON array.
STREAM_BATCH = 500
ARTIFACT_CHUNK = 16 * 1024
LIVE_LOG_POLL_SECONDS = 0.1
LOOPBACK = ("127.", "::1", "::ffff:127.")


class ConnectionDropped(Exception):
    """Raised to make the server close a connection without answering (the ``drop`` fault)."""


class _DropFilter(logging.Filter):
    """Keeps uvicorn from logging a traceback for every deliberately dropped connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


def install_log_filter() -> None:
    """Silence uvicorn's error log for dropped connections (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


def error_json(status: int, error: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's short JSON error body.

    :param status: the HTTP status.
    :param error: a short error code.
    :param message: what went wrong.
    :param headers: extra response headers.
    """
    return JSONResponse({"error": error, "message": message}, status, headers=headers)


# --- middleware -------------------------------------------------------------------------------------


class FaultsAndCounters:
    """Counts requests and statuses, and injects the configured faults (never on ``/_sandbox/``).

    :param app: the wrapped application.
    :param ctx: the sandbox's state.
    """

    def __init__(self, app: ASGIApp, ctx: SandboxContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        counters = self.ctx.counters
        counters.request(scope["path"])
        decision = self.ctx.injector.decide(scope["path"])

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counters.status[str(message["status"])] += 1
            await send(message)

        if decision is None:
            await self.app(scope, receive, counting_send)
            return
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.action == DROP:
            counters.faults_injected += 1
            counters.status[DROP] += 1
            await _drop(send)
        elif decision.action is not None:
            counters.faults_injected += 1
            await _fault_response(decision)(scope, receive, counting_send)
        elif decision.slow_body:
            await self.app(scope, receive, _slow_sender(counting_send, decision.slow_body))
        else:
            await self.app(scope, receive, counting_send)


#: The literal path segments of the API's routes, by their lower-case form.
_LITERAL_SEGMENTS = {
    seg.lower(): seg
    for path in (
        api.VERSION,
        api.LOGIN,
        api.PROJECTS,
        PROJECT_API,
        api.APPLICATIONS,
        api.TEST_PACKAGES,
        api.DEVICE_GROUPS,
        api.TEST_RUNS,
        api.test_run_jobs("x"),
        api.job_log("x", live=True),
        api.job_artifacts("x"),
        api.SCHEDULES,
    )
    for seg in path.split("/")
    if seg and "{" not in seg
}


class CaseInsensitivePaths:
    """Match routes case-insensitively, as the real (ASP.NET) service does: ``/API/TestRun`` works.

    Each literal segment of a route (``api``, ``testRun``, ``jobs``...) is rewritten to its canonical
    case before routing; the segment after ``project`` (the project's name) and ids are left alone.

    :param app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(ADMIN_PREFIX):
            parts = scope["path"].split("/")
            for n, seg in enumerate(parts):
                if n >= 2 and parts[n - 1] == "project":
                    continue
                parts[n] = _LITERAL_SEGMENTS.get(seg.lower(), seg)
            path = "/".join(parts)
            if path != scope["path"]:
                scope = {**scope, "path": path, "raw_path": path.encode()}
        await self.app(scope, receive, send)


async def _drop(send: Send) -> None:
    """Close the connection without a response.

    uvicorn validates a response's headers before writing anything; an invalid one makes ``send``
    fail with nothing written, and an exception raised after the response has started makes uvicorn
    close the transport instead of answering 500.
    """
    with contextlib.suppress(Exception):  # expected: the invalid header is the point
        await send({"type": "http.response.start", "status": 500, "headers": [(b"x-sandbox-drop", b"\n")]})
    raise ConnectionDropped("connection dropped by a sandbox fault rule")


def _fault_response(decision: Decision) -> Response:
    status = int(decision.action or 500)
    headers = {"Retry-After": str(decision.retry_after)} if status in RETRY_AFTER_STATUSES else None
    return error_json(status, "sandbox_fault", f"fault injected by the sandbox: HTTP {status}", headers)


def _slow_sender(send: Send, seconds: float, pieces: int = 10) -> Send:
    """A ``send`` that trickles the first body message out over ``seconds``."""
    pending = [seconds]

    async def slow_send(message: Message) -> None:
        body = message.get("body", b"")
        if message["type"] != "http.response.body" or not pending or not body:
            await send(message)
            return
        pending.clear()
        step = max(1, -(-len(body) // pieces))
        parts = [body[i : i + step] for i in range(0, len(body), step)]
        for n, part in enumerate(parts):
            await asyncio.sleep(seconds / len(parts))
            last = n == len(parts) - 1
            await send(
                {
                    "type": "http.response.body",
                    "body": part,
                    "more_body": message.get("more_body", False) or not last,
                }
            )

    return slow_send


class BearerAuth:
    """Requires a valid bearer token on every API path.

    :param app: the wrapped application.
    :param ctx: the sandbox's state.
    """

    def __init__(self, app: ASGIApp, ctx: SandboxContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and not (
            path.startswith(ADMIN_PREFIX) or path == api.LOGIN or is_ad_path(path)
        ):
            problem = self._problem(scope)
            if problem is not None:
                challenge = f'Bearer error="invalid_token", error_description="{problem}"'
                response = error_json(401, "invalid_token", problem, {"WWW-Authenticate": challenge})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope) -> str | None:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is None:
            return "No bearer token was provided"
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "The Authorization header must be 'Bearer <token>'"
        try:
            self.ctx.tokens.verify(token.strip())
        except InvalidToken as exc:
            return str(exc).replace('"', "'")
        return None


# --- helpers ----------------------------------------------------------------------------------------


async def json_array(records: Iterable[Record], batch: int = STREAM_BATCH) -> AsyncIterator[bytes]:
    """Stream records as one JSON array, ``batch`` records per chunk, holding one chunk at a time.

    :param records: the records (consumed lazily).
    :param batch: records per chunk.
    """
    encode = json.JSONEncoder(separators=(",", ":")).encode
    yield b"["
    sep, buf = "", []
    for record in records:
        buf.append(encode(record))
        if len(buf) >= batch:
            yield (sep + ",".join(buf)).encode()
            sep, buf = ",", []
            await asyncio.sleep(0)
    if buf:
        yield (sep + ",".join(buf)).encode()
    yield b"]"


def _loopback_only(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else ""
        if not host.startswith(LOOPBACK):
            return error_json(403, "forbidden", "the sandbox admin API answers loopback clients only")
        return await handler(request)

    return guarded


def _int_param(request: Request, name: str, what: str) -> int:
    try:
        return int(request.path_params[name])
    except ValueError:
        raise HTTPException(404, f"{what} {request.path_params[name]!r} not found") from None


# --- the application --------------------------------------------------------------------------------


def build_app(ctx: SandboxContext) -> ASGIApp:
    """The sandbox's ASGI application.

    :param ctx: the sandbox's state.
    """
    data = ctx.data

    def store_of(request: Request) -> ProjectStore:
        store = ctx.stores.get(request.path_params["project"])
        if store is None:
            raise HTTPException(404, f"project {request.path_params['project']!r} not found")
        return store

    def find_job(request: Request) -> tuple[Record, Record, Record, float]:
        """The job of the path, its run, its device and its progress (1 when finished)."""
        store = store_of(request)
        job_id = _int_param(request, "job_id", "job")
        created = store.jobs.get(job_id)
        if created is not None:
            run, k = created
            job, progress = run.job(k)
            return job, run.record, run.devices[k], progress
        found = data.job(job_id)
        if found is None:
            raise HTTPException(404, f"job {job_id} not found")
        return (*found, 1.0)

    # --- global endpoints ---

    async def version(request: Request) -> Response:
        return JSONResponse({"version": __version__, "sandbox": True, "name": "Quamotion Cloud sandbox"})

    async def login(request: Request) -> Response:
        async with request.form() as form:
            key = form.get(api.LOGIN_API_KEY_FIELD) or form.get("ApiKey")
        if not isinstance(key, str) or not key:
            return error_json(
                400, "invalid_request", f"the form field {api.LOGIN_API_KEY_FIELD!r} is required"
            )
        if key != ctx.credentials.api_key:
            return error_json(401, "invalid_api_key", "The API key is not valid")
        token, claims = ctx.tokens.issue(
            audience=api.DEFAULT_RESOURCE, tenant_id=ctx.credentials.tenant_id, app_id="api-key"
        )
        ctx.counters.logins += 1
        lifetime = str(claims["exp"] - claims["iat"])
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "expires_on": str(claims["exp"]),
                "not_before": str(claims["nbf"]),
                "resource": api.DEFAULT_RESOURCE,
                "access_token": token,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def projects(request: Request) -> Response:
        return JSONResponse(data.projects)

    # --- project endpoints ---

    async def list_apps(request: Request) -> Response:
        return JSONResponse(store_of(request).applications())

    async def list_packages(request: Request) -> Response:
        return JSONResponse(store_of(request).test_packages())

    async def upload(request: Request, register: Callable[[str], Record]) -> Response:
        async with request.form() as form:
            files = [f for f in form.getlist(api.UPLOAD_FILE_FIELD) if isinstance(f, UploadFile)]
            if not files:
                return error_json(
                    400,
                    "bad_request",
                    f"expected a multipart form with a file part named {api.UPLOAD_FILE_FIELD!r}",
                )
            records = []
            for f in files:
                while await f.read(1 << 20):
                    pass
                try:
                    records.append(register(f.filename or ""))
                except BadRequest as exc:
                    return error_json(400, "bad_request", str(exc))
        return JSONResponse(records)

    async def upload_app(request: Request) -> Response:
        return await upload(request, store_of(request).upload_app)

    async def upload_package(request: Request) -> Response:
        return await upload(request, store_of(request).upload_test_package)

    async def device_groups(request: Request) -> Response:
        store_of(request)
        return JSONResponse([g.record for g in data.device_groups])

    async def list_runs(request: Request) -> Response:
        created = list(store_of(request).created_runs())
        return StreamingResponse(
            # newest first, as the real list: created runs, then the history from its end
            json_array(itertools.chain(created, data.iter_runs(range(data.settings.runs)[::-1]))),
            media_type="application/json",
        )

    async def create_run(request: Request) -> Response:
        store = store_of(request)
        try:
            body = await request.json()
        except ValueError:
            return error_json(400, "bad_request", "the request body must be JSON (CreateTestRunRequest)")
        try:
            run = store.create_run(body)
        except BadRequest as exc:
            return error_json(400, "bad_request", str(exc))
        return JSONResponse(run.record)

    async def run_jobs(request: Request) -> Response:
        store = store_of(request)
        run_id = request.path_params["run_id"]
        index = data.run_index(run_id)
        if index is not None:
            return JSONResponse(data.jobs(index))
        created = store.runs.get(run_id.lower())
        if created is None:
            raise HTTPException(404, f"test run {run_id!r} not found")
        return JSONResponse(created.jobs())

    async def get_job(request: Request) -> Response:
        return JSONResponse(find_job(request)[0])

    async def job_log(request: Request) -> Response:
        job, run, device, progress = find_job(request)
        return PlainTextResponse("\n".join(job_log_lines(job, run, device, progress=progress)) + "\n")

    async def job_log_live(request: Request) -> Response:
        find_job(request)  # 404 before the stream starts

        async def follow() -> AsyncIterator[bytes]:
            sent = 0
            while True:
                job, run, device, progress = find_job(request)
                lines = job_log_lines(job, run, device, progress=progress)
                if len(lines) > sent:
                    yield ("\n".join(lines[sent:]) + "\n").encode()
                    sent = len(lines)
                if api.JobStatus.parse(job[api.JOB_STATUS]).is_terminal:
                    return
                await asyncio.sleep(LIVE_LOG_POLL_SECONDS)

        return StreamingResponse(follow(), media_type="text/plain; charset=utf-8")

    async def job_artifacts(request: Request) -> Response:
        job, run, device, progress = find_job(request)
        if not job[api.JOB_HAS_ARTIFACTS]:
            return error_json(404, "not_found", f"job {job[api.JOB_ID]} has no artifacts")
        payload = artifacts_zip(job, "\n".join(job_log_lines(job, run, device, progress=progress)) + "\n")

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), ARTIFACT_CHUNK):
                yield payload[start : start + ARTIFACT_CHUNK]

        return StreamingResponse(
            chunks(),
            media_type="application/zip",
            headers={
                "Content-Length": str(len(payload)),
                "Content-Disposition": f'attachment; filename="artifacts-{job[api.JOB_ID]}.zip"',
            },
        )

    async def schedules(request: Request) -> Response:
        return JSONResponse(store_of(request).schedules())

    async def delete_schedule(request: Request) -> Response:
        store = store_of(request)
        schedule_id = _int_param(request, "schedule_id", "schedule")
        if not store.delete_schedule(schedule_id):
            raise HTTPException(404, f"schedule {schedule_id} not found")
        return Response(status_code=204)

    # --- admin endpoints ---

    @_loopback_only
    async def admin_info(request: Request) -> Response:
        settings = data.settings
        return JSONResponse(
            {
                "seed": settings.seed,
                "runs": settings.runs,
                "days": settings.days,
                "anchor": iso_offset(settings.anchor),
                "anchor_ts": settings.anchor,
                "projects": [p[api.PROJECT_NAME] for p in data.projects],
                "queue_seconds": ctx.options.queue_seconds,
                "run_seconds": ctx.options.run_seconds,
                "token_lifetime": ctx.tokens.lifetime,
                "pid": os.getpid(),
                "time": time.time(),
            }
        )

    @_loopback_only
    async def admin_faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                config = FaultConfig.from_dict(await request.json())
            except (ValueError, TypeError) as exc:
                return error_json(400, "bad_request", f"invalid fault configuration: {exc}")
            ctx.apply_faults(config)
        elif request.method == "DELETE":
            ctx.apply_faults(FaultConfig())
        return JSONResponse(ctx.injector.config.to_dict())

    @_loopback_only
    async def admin_revoke(request: Request) -> Response:
        ctx.tokens.revoke_all()
        return JSONResponse({"revoked": True, "generation": ctx.tokens.generation})

    @_loopback_only
    async def admin_counters(request: Request) -> Response:
        return JSONResponse(ctx.counters.snapshot())

    @_loopback_only
    async def admin_counters_reset(request: Request) -> Response:
        ctx.counters.reset()
        return JSONResponse(ctx.counters.snapshot())

    p = PROJECT_API
    routes: list[BaseRoute] = [
        *build_ad_routes(ctx),
        Route(api.VERSION, version, methods=["GET"]),
        Route(api.LOGIN, login, methods=["POST"]),
        Route(api.PROJECTS, projects, methods=["GET"]),
        Route(p + api.APPLICATIONS, list_apps, methods=["GET"]),
        Route(p + api.APPLICATIONS, upload_app, methods=["POST"]),
        Route(p + api.TEST_PACKAGES, list_packages, methods=["GET"]),
        Route(p + api.TEST_PACKAGES, upload_package, methods=["POST"]),
        Route(p + api.DEVICE_GROUPS, device_groups, methods=["GET"]),
        Route(p + api.TEST_RUNS, list_runs, methods=["GET"]),
        Route(p + api.TEST_RUNS, create_run, methods=["POST"]),
        Route(p + api.test_run_jobs("{run_id}"), run_jobs, methods=["GET"]),
        Route(p + api.job("{job_id}"), get_job, methods=["GET"]),
        Route(p + api.job_log("{job_id}"), job_log, methods=["GET"]),
        Route(p + api.job_log("{job_id}", live=True), job_log_live, methods=["GET"]),
        Route(p + api.job_artifacts("{job_id}"), job_artifacts, methods=["GET"]),
        Route(p + api.SCHEDULES, schedules, methods=["GET"]),
        Route(p + api.schedule("{schedule_id}"), delete_schedule, methods=["DELETE"]),
        Route(ADMIN_PREFIX + "info", admin_info, methods=["GET"]),
        Route(ADMIN_PREFIX + "faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route(ADMIN_PREFIX + "revoke", admin_revoke, methods=["POST"]),
        Route(ADMIN_PREFIX + "counters", admin_counters, methods=["GET"]),
        Route(ADMIN_PREFIX + "counters/reset", admin_counters_reset, methods=["POST"]),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404 and exc.detail == "Not Found":
            return error_json(404, "not_found", f"no such endpoint: {request.method} {request.url.path}")
        error = "not_found" if exc.status_code == 404 else "http_error"
        return error_json(exc.status_code, error, str(exc.detail), dict(exc.headers or {}))

    starlette = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return CaseInsensitivePaths(FaultsAndCounters(BearerAuth(starlette, ctx), ctx))
