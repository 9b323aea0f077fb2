"""Decoding replies: the nesting-depth limit of streamed and whole JSON, and "JSON or text"."""

from __future__ import annotations

import io
import json
import random
import tracemalloc
from typing import Any

import pytest

from airflow_provider_quamotion.exceptions import QuamotionResponseError
from airflow_provider_quamotion.transport import jsonio
from airflow_provider_quamotion.transport.jsonio import (
    MAX_JSON_DEPTH,
    DepthGuard,
    iter_json_records,
    json_or_text,
    parse_json,
)


class _Raw(io.BytesIO):
    decode_content = False

    def read(self, n: int | None = -1, decode_content: bool | None = None) -> bytes:
        return super().read(n)


class _Response:
    """Just enough of a ``requests.Response`` for the decoders."""

    def __init__(self, body: bytes) -> None:
        self.raw = _Raw(body)
        self.content = body
        self._content = body
        self.headers = {"Content-Type": "application/json"}
        self.status_code = 200
        self.url = "https://quamotion.example/project/p/api/testRun"
        self.closed = False

    def json(self) -> Any:
        return json.loads(self.content)

    def close(self) -> None:
        self.closed = True


def _nested(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize("kind", ["array", "object"])
def test_a_deeply_nested_stream_is_refused_cheaply_naming_the_limit(kind: str) -> None:
    body = _nested(15_000 if kind == "array" else 6_000, kind)  # 30 KB
    assert len(body) >= 30_000
    tracemalloc.start()
    try:
        with pytest.raises(QuamotionResponseError, match=f"more than {MAX_JSON_DEPTH} levels"):
            list(iter_json_records(_Response(b"[" + body + b"]")))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000  # ijson's prefixes alone cost hundreds of MB on this reply


def test_the_depth_limit_is_an_argument_and_counts_exactly() -> None:
    fine = b"[" + _nested(MAX_JSON_DEPTH - 1, "array") + b"]"
    assert list(iter_json_records(_Response(fine))) == [json.loads(fine)[0]]
    too_deep = b"[" + _nested(MAX_JSON_DEPTH, "array") + b"]"
    with pytest.raises(QuamotionResponseError, match="more than 64 levels"):
        list(iter_json_records(_Response(too_deep)))
    with pytest.raises(QuamotionResponseError, match="more than 3 levels"):
        list(iter_json_records(_Response(b'[{"a": [[1]]}]'), max_depth=3))
    assert list(iter_json_records(_Response(b'[{"a": [1]}]'), max_depth=3)) == [{"a": [1]}]


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps([{"name": "[" * 500 + '\\"{' * 200, "path": "C:\\" + "{" * 300}])
    assert list(iter_json_records(_Response(text.encode()))) == json.loads(text)


def _reference_depth(text: str) -> int:
    depth = best = 0
    in_string = escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth > 0 and roll < 0.3:
        return [_random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))]
    if depth > 0 and roll < 0.6:
        return {rng.choice('ab[{"\\'): _random_value(rng, depth - 1) for _ in range(rng.randint(0, 3))}
    return "".join(rng.choice('ab[]{}"\\\\\n\té') for _ in range(rng.randint(0, 12)))


def test_the_guard_agrees_with_a_character_by_character_reading_at_any_chunking() -> None:
    rng = random.Random(20261201)
    for _ in range(1500):
        text = json.dumps(_random_value(rng, rng.randint(0, 12)))
        data = text.encode()
        depth = _reference_depth(text)
        for limit in (depth, depth - 1) if depth else (0,):
            guard = DepthGuard(limit)
            cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            if limit >= depth:
                for piece in pieces:
                    guard.feed(piece)
                assert guard.depth == 0
            else:
                with pytest.raises(QuamotionResponseError):
                    for piece in pieces:
                        guard.feed(piece)


def test_a_deeply_nested_whole_reply_is_a_response_error_not_a_recursion_error() -> None:
    response = _Response(b"[" * 200_000 + b"]" * 200_000)
    with pytest.raises(QuamotionResponseError, match="levels deep"):
        parse_json(response)
    with pytest.raises(QuamotionResponseError, match="levels deep"):
        json_or_text(response.content)


def test_json_or_text() -> None:
    assert json_or_text(b"") is None
    assert json_or_text(b'{"a": [1]}') == {"a": [1]}
    assert json_or_text(b"<html>[[[</html>") == "<html>[[[</html>"


def test_the_export_throughput_check_runs_the_guard_on_every_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    fed: list[int] = []
    real = DepthGuard.feed

    def counting(self: DepthGuard, chunk: bytes) -> None:
        fed.append(len(chunk))
        real(self, chunk)

    monkeypatch.setattr(jsonio.DepthGuard, "feed", counting)
    body = json.dumps([{"id": i, "tags": ["x"]} for i in range(20_000)]).encode()
    assert len(list(iter_json_records(_Response(body)))) == 20_000
    assert sum(fed) == len(body)
