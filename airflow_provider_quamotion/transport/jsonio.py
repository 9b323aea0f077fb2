"""Decoding replies: streamed JSON arrays, "JSON or a clear error", one place for both clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_quamotion.exceptions import QuamotionError, QuamotionResponseError, excerpt


def iter_json_records(response: Any, record_path: str | None = None) -> Iterator[Any]:
    """Stream the records of a JSON array reply without holding the body in memory.

    The array may be the whole reply or wrapped (``{"value": [...]}``); ``record_path`` (dotted, as
    ``ijson`` prefixes: ``"data.items"``) names another place.
    """
    import ijson

    raw = response.raw
    raw.decode_content = True
    head = b""
    while not head.strip():
        chunk = raw.read(1)
        if not chunk:
            return
        head += chunk
    prefix = (
        f"{record_path}.item" if record_path else ("item" if head.strip().startswith(b"[") else "value.item")
    )

    class _Chained:
        def __init__(self) -> None:
            self.pending = head

        def read(self, size: int = -1) -> bytes:
            if size == 0:  # ijson probes the stream's type with read(0)
                return b""
            if self.pending:
                out, self.pending = self.pending, b""
                return out
            return raw.read(size if size and size > 0 else 65536) or b""

    try:
        yield from ijson.items(_Chained(), prefix, use_float=True)
    except ijson.JSONError as err:
        raise error_for_non_json(response, f"the JSON array could not be parsed ({err})") from None
    finally:
        response.close()


def error_for_non_json(response: Any, why: str = "the reply is not JSON") -> QuamotionError:
    """The typed error for a reply that should have been JSON."""

    method = getattr(getattr(response, "request", None), "method", "") or ""
    url = str(getattr(response, "url", ""))
    ctype = response.headers.get("Content-Type", "unknown")
    body = getattr(response, "_content", None)
    text = excerpt(body if isinstance(body, bytes | str) else None)
    return QuamotionResponseError(
        f"{method} {urlsplit(url).path}: {why} (Content-Type {ctype}){': ' + text if text else ''}. "
        "Check the endpoint: an HTML page usually means a wrong host or path.",
        status=getattr(response, "status_code", None),
        method=method,
        url=url,
    )


def parse_json(response: Any) -> Any:
    """The JSON body of a reply, or a :class:`QuamotionResponseError` that says what came instead."""
    try:
        return response.json()
    except ValueError:
        raise error_for_non_json(response) from None


__all__ = ["error_for_non_json", "iter_json_records", "parse_json"]
