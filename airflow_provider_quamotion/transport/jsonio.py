"""Decoding replies: streamed JSON arrays, "JSON or a clear error", one place for both clients.

Every body read here is bounded: JSON is checked for its nesting depth before a parser sees it
(:class:`DepthGuard`, :data:`MAX_JSON_DEPTH`), and a whole-body read (:func:`read_body`,
:func:`abounded_body`) stops at a byte budget and at the caller's deadline, which bounds the whole body
rather than each read of the socket.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_quamotion.exceptions import (
    QuamotionError,
    QuamotionResponseError,
    QuamotionTimeoutError,
    excerpt,
)

#: The deepest nesting of arrays and objects a reply may have. Real replies nest three or four
#: levels; a parser's cost (ijson's prefixes, ``json``'s recursion) grows with depth, quadratically
#: for ijson, so a small hostile reply of deep nesting could otherwise cost gigabytes.
MAX_JSON_DEPTH = 64

#: The largest body :func:`read_body`/:func:`abounded_body` read by default (decoded bytes).
MAX_BODY_BYTES = 16 * 1024 * 1024

_CHUNK = 65536

#: ``bytes.translate`` arguments: keep only quotes and brackets, and read ``{``/``}`` as ``[``/``]``.
_NOT_MARKS = bytes(b for b in range(256) if b not in b'"[]{}')
_NOT_MARKS_NOR_BACKSLASH = bytes(b for b in range(256) if b not in b'"[]{}\\')
_UNIFY = bytes.maketrans(b"{}", b"[]")


class QuamotionResponseTooLargeError(QuamotionResponseError):
    """A reply longer than the byte budget of its read; reading stopped at the budget."""


class DepthGuard:
    """Tracks the nesting depth of a JSON text fed in chunks; raises past ``limit``.

    Strings are skipped (a bracket inside one does not count), also when a string or an escape spans
    two chunks. The work per chunk is a few C-level passes (``bytes.replace`` dropping escaped
    quotes, ``bytes.split`` on quotes, ``bytes.translate`` keeping brackets, ``bytes.replace``
    removing matched pairs); only a chunk whose depth comes close to the limit is walked bracket by
    bracket.

    :param limit: the deepest nesting allowed.
    :param what: names the reply in the error.
    """

    def __init__(self, limit: int = MAX_JSON_DEPTH, what: str = "the reply") -> None:
        self.limit = int(limit)
        self.what = what
        self.depth = 0
        self._in_string = False
        self._carry = b""  # an odd backslash that ended the last chunk: it escapes the next byte

    def feed(self, chunk: bytes) -> None:
        """Account for the next chunk of the text.

        :raises QuamotionResponseError: when the nesting passes the limit.
        """
        if not chunk:
            return
        data = self._carry + chunk if self._carry else chunk
        if data.endswith(b"\\"):
            kept = data.rstrip(b"\\")
            self._carry = b"\\" if (len(data) - len(kept)) % 2 else b""
            data = kept
        else:
            self._carry = b""
        # Only quotes and brackets matter (and backslashes, which are only in strings: escaped
        # backslashes are dropped, then escaped quotes).
        if b"\\" in data:
            if b"\\\\" in data:
                data = data.replace(b"\\\\", b"")
            escaped = data.count(b'\\"')
            marks = data.translate(None, _NOT_MARKS_NOR_BACKSLASH)
            if marks.count(b'\\"') == escaped:  # no other escape stands before a quote here
                marks = marks.replace(b'\\"', b"").translate(None, b"\\")
            else:
                marks = data.replace(b'\\"', b"").translate(None, _NOT_MARKS)
        else:
            marks = data.translate(None, _NOT_MARKS)
        # Two quotes with nothing between them toggle the state twice, so dropping them changes
        # nothing: what is left is the quotes next to a bracket.
        if b'"' in marks:
            marks = marks.replace(b'""', b"")
        if b'"' in marks:
            pieces = marks.split(b'"')
            marks = b"".join(pieces[1::2] if self._in_string else pieces[::2])
            if len(pieces) % 2 == 0:
                self._in_string = not self._in_string
        elif self._in_string:
            return  # the whole chunk is inside one string
        if marks:
            self._count(marks.translate(_UNIFY))

    def _count(self, brackets: bytes) -> None:
        opens = brackets.count(b"[")
        change = 2 * opens - len(brackets)
        if self.depth + opens <= self.limit:
            self.depth += change
            return
        reduced, passes = brackets, 0
        while passes < 8:
            shorter = reduced.replace(b"[]", b"")
            if shorter == reduced:
                break
            reduced, passes = shorter, passes + 1
        if b"[]" not in reduced:  # reduced is "]]]...[[[": matched groups at most `passes` deep
            closes = reduced.count(b"]")
            highest = max(self.depth, self.depth + len(reduced) - 2 * closes) + passes
            if highest <= self.limit:
                self.depth += change
                return
        depth = self.depth
        for byte in brackets:  # close to the limit: walk it exactly
            depth += 1 if byte == 0x5B else -1
            if depth > self.limit:
                raise self.error()
        self.depth = depth

    def error(self) -> QuamotionResponseError:
        """The error for a text nested deeper than the limit."""
        return QuamotionResponseError(
            f"{self.what} nests arrays or objects more than {self.limit} levels deep (the limit, "
            "MAX_JSON_DEPTH); no Quamotion reply does, so it was refused unparsed."
        )


def check_depth(data: bytes | str, limit: int = MAX_JSON_DEPTH, what: str = "the reply") -> None:
    """Refuse a JSON text nested deeper than ``limit`` (see :class:`DepthGuard`)."""
    guard = DepthGuard(limit, what)
    guard.feed(data.encode() if isinstance(data, str) else data)


def loads(data: bytes | str, limit: int = MAX_JSON_DEPTH, what: str = "the reply") -> Any:
    """``json.loads`` after the depth check; any parse failure is a :class:`QuamotionResponseError`."""
    check_depth(data, limit, what)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        raise QuamotionResponseError(f"{what} is not JSON ({err}).") from None


def iter_json_records(
    response: Any, record_path: str | None = None, *, max_depth: int = MAX_JSON_DEPTH
) -> Iterator[Any]:
    """Stream the records of a JSON array reply without holding the body in memory.

    The array may be the whole reply or wrapped (``{"value": [...]}``); ``record_path`` (dotted, as
    ``ijson`` prefixes: ``"data.items"``) names another place. Each chunk passes a
    :class:`DepthGuard` before ``ijson`` sees it.

    :param max_depth: the deepest nesting allowed (the reply's own array counts as one level).
    :raises QuamotionResponseError: for a reply that is not a JSON array, or nests past ``max_depth``.
    """
    import ijson

    raw = response.raw
    raw.decode_content = True
    where = _where(response)
    guard = DepthGuard(max_depth, f"{where}: the reply" if where else "the reply")
    head = b""
    while not head.strip():
        chunk = raw.read(1)
        if not chunk:
            return
        head += chunk
    guard.feed(head)
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
            data = raw.read(size if size and size > 0 else _CHUNK) or b""
            guard.feed(data)
            return data

    try:
        yield from ijson.items(_Chained(), prefix, use_float=True)
    except ijson.JSONError as err:
        raise error_for_non_json(response, f"the JSON array could not be parsed ({err})") from None
    finally:
        response.close()


def _where(response: Any) -> str:
    method = getattr(getattr(response, "request", None), "method", "") or ""
    try:
        path = urlsplit(str(getattr(response, "url", "") or "")).path
    except ValueError:
        path = ""
    return f"{method} {path}".strip()


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


def parse_json(
    response: Any,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    max_bytes: int = MAX_BODY_BYTES,
    deadline: float | None = None,
) -> Any:
    """The JSON body of a reply, or a :class:`QuamotionResponseError` that says what came instead.

    A reply sent with ``stream=True`` is read within ``max_bytes`` and ``deadline`` first
    (:func:`read_body`); a reply nested deeper than ``max_depth`` is refused before parsing (``json``
    would recurse).
    """
    if not getattr(response, "_content_consumed", True) and getattr(response, "raw", None) is not None:
        response._content = read_body(response, max_bytes=max_bytes, deadline=deadline)
        response._content_consumed = True
    content = response.content
    DepthGuard(max_depth, f"{_where(response)}: the reply").feed(content or b"")
    try:
        return response.json()
    except (ValueError, RecursionError):
        raise error_for_non_json(response) from None


def json_or_text(content: bytes, encoding: str | None = None, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A body's parsed JSON, or its text when it is not JSON, or ``None`` when it is empty.

    JSON nested deeper than ``max_depth`` is refused (:class:`QuamotionResponseError`), not handed
    on as text.
    """
    if not content:
        return None
    check_depth(content, max_depth)
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return content.decode(encoding or "utf-8", errors="replace")


def _too_large(where: str, max_bytes: int) -> QuamotionResponseTooLargeError:
    return QuamotionResponseTooLargeError(
        f"{where}: the reply is longer than {max_bytes} bytes, the budget of this read; reading "
        "stopped there."
    )


def _too_slow(where: str, deadline: float) -> QuamotionTimeoutError:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(deadline))
    return QuamotionTimeoutError(f"{where}: the reply's body was still arriving at the deadline ({when}).")


def read_body(response: Any, *, max_bytes: int = MAX_BODY_BYTES, deadline: float | None = None) -> bytes:
    """The body of a ``requests`` reply sent with ``stream=True``, at most ``max_bytes`` (decoded).

    ``deadline`` (epoch seconds) bounds the whole body: the socket's timeout is cut to the time left
    before each read, and a body still arriving at the deadline ends the read. The reply is closed.

    :raises QuamotionResponseTooLargeError: past ``max_bytes``.
    :raises QuamotionTimeoutError: at the deadline.
    """
    return b"".join(iter_body(response, max_bytes=max_bytes, deadline=deadline))


def iter_body(
    response: Any, *, max_bytes: int = MAX_BODY_BYTES, deadline: float | None = None
) -> Iterator[bytes]:
    """The body of a ``requests`` reply sent with ``stream=True``, chunk by chunk as it arrives
    (decoded), within ``max_bytes`` and ``deadline`` as :func:`read_body`; the reply is closed when
    the body ends, on an error, or when the caller stops early.

    :raises QuamotionResponseTooLargeError: past ``max_bytes`` (the bytes within it were yielded).
    :raises QuamotionTimeoutError: at the deadline.
    """
    where = _where(response)
    try:
        if getattr(response, "_content_consumed", True) or response.raw is None:
            content: bytes = response.content or b""  # already read (not streamed)
            if len(content) > max_bytes:
                raise _too_large(where, max_bytes)
            if content:
                yield content
            return
        raw = response.raw
        sock = getattr(getattr(raw, "_connection", None), "sock", None)
        total = 0
        while True:
            if deadline is not None:
                left = deadline - time.time()
                if left <= 0:
                    raise _too_slow(where, deadline)
                if sock is not None:
                    try:
                        sock.settimeout(max(left, 0.01))
                    except OSError:
                        sock = None
            try:
                chunk = raw.read1(min(_CHUNK, max_bytes - total + 1), decode_content=True)
            except Exception as exc:  # a read timeout (the deadline's) or a dropped connection
                if deadline is not None and time.time() >= deadline:
                    raise _too_slow(where, deadline) from None
                raise QuamotionResponseError(f"{where}: the reply's body could not be read ({exc}).") from exc
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                within = chunk[: len(chunk) - (total - max_bytes)]
                if within:
                    yield within
                raise _too_large(where, max_bytes)
            yield chunk
    finally:
        response.close()


def read_json_or_text(
    response: Any,
    *,
    max_bytes: int = MAX_BODY_BYTES,
    deadline: float | None = None,
    max_depth: int = MAX_JSON_DEPTH,
) -> Any:
    """:func:`read_body` then :func:`json_or_text`."""
    encoding = getattr(response, "encoding", None)
    return json_or_text(
        read_body(response, max_bytes=max_bytes, deadline=deadline),
        encoding if isinstance(encoding, str) else None,
        max_depth=max_depth,
    )


def check_content_encoding(encoding: str | None, where: str) -> Any:
    """The decoder of a reply's ``Content-Encoding`` (``None`` for identity), or a typed error.

    The async client asks for ``Accept-Encoding: identity``; a reply encoded anyway is decoded here,
    a bounded piece at a time (:func:`abounded_body`), so a small gzip bomb cannot expand in memory.
    Only gzip and deflate are read.

    :param encoding: the reply's ``Content-Encoding`` header.
    :param where: names the reply in the error.
    """
    import zlib

    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return None
    if name not in ("gzip", "x-gzip", "deflate"):
        raise QuamotionResponseError(
            f"{where}: the reply is encoded as {name!r}, which was not asked for "
            "(Accept-Encoding: identity); only gzip and deflate are read."
        )
    return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header


async def abounded_body(
    chunks: AsyncIterator[bytes],
    *,
    where: str,
    decoder: Any = None,
    max_bytes: int = MAX_BODY_BYTES,
    deadline: float | None = None,
) -> AsyncIterator[bytes]:
    """A reply's body as it arrives, decoded, within ``max_bytes`` and ``deadline``.

    Reading stops past ``max_bytes`` of the *decoded* body (:class:`QuamotionResponseTooLargeError`;
    the bytes within the budget are yielded first) or at ``deadline``
    (:class:`QuamotionTimeoutError`, also while waiting for the next chunk), whether the caller reads
    it whole or streams it.

    :param chunks: the raw body (as sent, after transfer decoding).
    :param where: names the reply in errors (``GET /path``).
    :param decoder: :func:`check_content_encoding`'s decoder of the reply, or ``None``.
    :param max_bytes: the budget of decoded bytes.
    :param deadline: an absolute time (epoch seconds) the whole body must have arrived by.
    """
    total = 0
    iterator = chunks.__aiter__()
    while True:
        try:
            if deadline is None:
                chunk = await iterator.__anext__()
            else:
                left = deadline - time.time()
                if left <= 0:
                    raise _too_slow(where, deadline)
                chunk = await _within(iterator.__anext__(), left)
        except StopAsyncIteration:
            if decoder is not None:
                rest = decoder.flush()
                if total + len(rest) > max_bytes:
                    raise _too_large(where, max_bytes) from None
                if rest:
                    yield rest
            return
        except TimeoutError:
            raise _too_slow(where, deadline or time.time()) from None
        for piece in _decoded(decoder, chunk, max_bytes - total + 1, where):
            total += len(piece)
            if total > max_bytes:
                within = piece[: len(piece) - (total - max_bytes)]
                if within:  # a streaming reader gets the bytes within the budget first
                    yield within
                raise _too_large(where, max_bytes)
            yield piece


async def _within(awaitable: Any, seconds: float) -> Any:
    """``await awaitable``, or ``TimeoutError`` after ``seconds``; on Python 3.11+ without a task per
    call (``asyncio.wait_for`` wraps each awaitable in a task, which per body chunk of thousands of
    triggers is garbage the collector must trace)."""
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable


def _decoded(decoder: Any, chunk: bytes, room: int, where: str) -> Iterator[bytes]:
    """``chunk`` decoded, at most about ``room`` bytes of output (the rest is not decompressed)."""
    if decoder is None:
        yield chunk
        return
    import zlib

    data = chunk
    while data:
        try:
            out = decoder.decompress(data, max(room, 1))
        except zlib.error as err:
            raise QuamotionResponseError(f"{where}: the compressed reply is corrupt ({err}).") from None
        data = decoder.unconsumed_tail
        room -= len(out)
        yield out
        if room <= 0:
            return


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "DepthGuard",
    "QuamotionResponseTooLargeError",
    "abounded_body",
    "check_content_encoding",
    "check_depth",
    "error_for_non_json",
    "iter_body",
    "iter_json_records",
    "json_or_text",
    "loads",
    "parse_json",
    "read_body",
    "read_json_or_text",
]
