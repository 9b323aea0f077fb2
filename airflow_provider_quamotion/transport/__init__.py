"""The transport: one request policy for the sync (``requests``) and async (``aiohttp``) clients.

* :mod:`.policy`: the pure rules (URL resolution, destination checks, retry decisions, errors).
* :mod:`.sync`: :class:`QuamotionSession`, the ``requests`` client.
* :mod:`.aio`: :class:`AsyncQuamotionClient`, the ``aiohttp`` client, pools and SSL contexts.
* :mod:`.jsonio`: decoding replies (streamed JSON arrays, "JSON or a clear error").
* :mod:`.project`: the single-flight project-root resolver both clients use.

Names are imported lazily, so importing this package (or its policy alone, as the settings do) costs
no ``requests`` or ``aiohttp`` import.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AsyncQuamotionClient": "aio",
    "ssl_context": "aio",
    "QuamotionSession": "sync",
    "GuardedAdapter": "sync",
    "error_for_non_json": "jsonio",
    "iter_json_records": "jsonio",
    "parse_json": "jsonio",
    "project_api_root": "project",
    "TokenProvider": "policy",
    "check_destination": "policy",
    "destination_of": "policy",
    "error_for_status": "policy",
    "is_certificate_failure": "policy",
    "resolve_url": "policy",
    "retry_after_seconds": "policy",
    "retry_decision": "policy",
    "wait_seconds": "policy",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = sorted(_HOMES)
