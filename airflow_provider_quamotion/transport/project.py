"""The project-root resolver both clients use: one ``GET /api/project`` per credentials and project.

A project endpoint is ``{relativeUrl}api/...``; the root comes from ``GET /api/project`` and is cached
process-wide, keyed by the *whole identity* of the credentials (:meth:`QuamotionSettings.identity`:
origin, client ID, tenant, hashed secret and API key, TLS and proxies) and the project name, so two
teams' connections to one host never share a project. Lookups are single-flight: concurrent sync
callers wait on one lock per key, async callers of one event loop on one task (the loop never waits on
a thread's lock). Both parse the reply the same way (:func:`project_api_root` over
:func:`~airflow_provider_quamotion.transport.jsonio.parse_json`) and honour the caller's deadline.
"""

from __future__ import annotations

import asyncio
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from airflow_provider_quamotion import api
from airflow_provider_quamotion.exceptions import (
    QuamotionConfigError,
    QuamotionNotFoundError,
    QuamotionResponseError,
)

if TYPE_CHECKING:
    from airflow_provider_quamotion.settings import QuamotionSettings

#: What a project's ``relativeUrl`` may hold: plain path segments (no ``\\``, ``?``, ``#``, dot segments).
_RELATIVE_URL = re.compile(r"/(?:(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})+/)*")
#: Project API roots by (credentials identity, project).
_PROJECT_ROOTS: dict[tuple[str, ...], str] = {}
_SYNC_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_SYNC_GUARD = threading.Lock()
#: Per event loop: the lookup in flight for a key (one request, the others await it).
_LOOKUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], asyncio.Task[str]]] = (
    weakref.WeakKeyDictionary()
)


def project_key(settings: QuamotionSettings) -> tuple[str, ...]:
    """The cache key of a connection's project root: its credentials' whole identity and the project."""
    return (*settings.identity(), str(settings.project))


def clear() -> None:
    """Forget every cached project root (tests)."""
    _PROJECT_ROOTS.clear()


def project_api_root(projects: Any, wanted: str | None) -> str:
    """Pick the project's API root path (``{relativeUrl}api/``) from the ``/api/project`` reply.

    :param projects: the decoded reply (a JSON array of projects, or ``{"value": [...]}``).
    :param wanted: the project's name; ``None`` takes the only project the account sees.
    :raises QuamotionResponseError: the reply is not a list of projects.
    :raises QuamotionConfigError: no project named, and the account sees none or several.
    :raises QuamotionNotFoundError: the named project is not visible.
    """
    try:
        records = api.unwrap_list(projects)
    except TypeError as err:
        raise QuamotionResponseError(f"GET {api.PROJECTS}: {err}; expected the list of projects.") from None
    names = [str(p.get(api.PROJECT_NAME)) for p in records if isinstance(p, Mapping)]
    if wanted is None:
        if len(records) != 1:
            listed = ", ".join(names) or "none"
            raise QuamotionConfigError(
                f"This account sees {len(records)} Quamotion projects ({listed}); set 'project' in the "
                "connection's extra to one of them."
            )
        chosen = records[0]
    else:
        matches = [p for p in records if isinstance(p, Mapping) and p.get(api.PROJECT_NAME) == wanted]
        if not matches:
            raise QuamotionNotFoundError(
                f"Project {wanted!r} is not visible to this account. Visible projects: "
                f"{', '.join(names) or 'none'}. Fix 'project' in the connection's extra.",
                status=404,
            )
        chosen = matches[0]
    if not isinstance(chosen, Mapping):
        raise QuamotionResponseError(
            f"GET {api.PROJECTS}: a project record is {type(chosen).__name__}, expected an object."
        )
    relative = str(chosen.get(api.PROJECT_RELATIVE_URL) or f"/project/{chosen.get(api.PROJECT_NAME)}/")
    if not relative.startswith("/"):
        relative = "/" + relative
    if not relative.endswith("/"):
        relative += "/"
    segments = [unquote(s) for s in relative.strip("/").split("/")]
    if not _RELATIVE_URL.fullmatch(relative) or any(
        s in ("", ".", "..") or "/" in s or "\\" in s for s in segments
    ):
        raise QuamotionResponseError(
            f"GET {api.PROJECTS}: the project's relativeUrl {relative[:100]!r} is not a plain path "
            "such as '/project/acme/'."
        )
    return relative + "api/"


def resolve(settings: QuamotionSettings, fetch: Callable[[], Any]) -> str:
    """The project root for ``settings``, fetching the project list (``fetch()``, decoded) at most once
    at a time per key; the result is cached, an error is not.

    :param settings: the connection's settings.
    :param fetch: returns the decoded ``GET /api/project`` reply (it carries the caller's deadline).
    """
    key = project_key(settings)
    root = _PROJECT_ROOTS.get(key)
    if root is not None:
        return root
    with _SYNC_GUARD:
        lock = _SYNC_LOCKS.setdefault(key, threading.Lock())
    with lock:
        root = _PROJECT_ROOTS.get(key)
        if root is None:
            root = project_api_root(fetch(), settings.project)
            _PROJECT_ROOTS[key] = root
        return root


async def aresolve(settings: QuamotionSettings, fetch: Callable[[], Awaitable[Any]]) -> str:
    """Like :func:`resolve` for an event loop: concurrent callers share one task (never a thread lock).

    The lookup runs as a task of its own, so a caller that is cancelled does not cancel the others'.
    """
    key = project_key(settings)
    root = _PROJECT_ROOTS.get(key)
    if root is not None:
        return root
    loop = asyncio.get_running_loop()
    lookups = _LOOKUPS.setdefault(loop, {})
    lookup = lookups.get(key)
    if lookup is None:

        async def look_up() -> str:
            found = project_api_root(await fetch(), settings.project)
            _PROJECT_ROOTS[key] = found
            return found

        lookup = loop.create_task(look_up())
        lookups[key] = lookup
        lookup.add_done_callback(lambda task: _lookup_done(lookups, key, task))
    return await asyncio.shield(lookup)


def _lookup_done(
    lookups: dict[tuple[str, ...], asyncio.Task[str]], key: tuple[str, ...], task: asyncio.Task[str]
) -> None:
    if lookups.get(key) is task:
        del lookups[key]
    if not task.cancelled():
        task.exception()  # retrieved here, so a lookup whose waiters all left is not reported as lost


__all__ = ["aresolve", "clear", "project_api_root", "project_key", "resolve"]
