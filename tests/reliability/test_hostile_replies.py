"""Hostile replies are bounded: a huge body stops at its budget, a trickled body at the deadline.

A small HTTP server on loopback plays the hostile API (the pattern of ``tests/security``): it counts
what it managed to send before the client hung up, so the tests assert bytes, not timings; the
trickle tests only bound a wait that would otherwise last 8 s.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_provider_quamotion.sensors.quamotion import QuamotionSensor
from airflow_provider_quamotion.triggers.quamotion import QuamotionHttpTrigger

TOKEN = "opaque-bearer-hostile"
API_KEY = "hostile-api-key-1"
HUGE = 160 * 1024 * 1024
MB = 1024 * 1024


@dataclass
class Hostile:
    port: int
    sent: dict[str, int] = field(default_factory=dict)
    done: dict[str, threading.Event] = field(default_factory=dict)
    jobs: bytes = b"[]"
    location: str = ""

    def wait(self, path: str) -> int:
        """What the server had sent on ``path`` when the client hung up (or it gave up)."""
        assert self.done.setdefault(path, threading.Event()).wait(30)
        return self.sent[path]


def _huge_body() -> Iterator[bytes]:
    piece = b"1," * (32 * 1024)
    yield b"["
    left = HUGE - 1
    while left > len(piece) + 2:
        yield piece
        left -= len(piece)
    yield b"1" + b" " * (left - 2) + b"]"


@functools.cache
def _gzip_bomb() -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    spaces = b" " * MB
    parts = [packer.compress(b"[")] + [packer.compress(spaces) for _ in range(64)]
    return b"".join([*parts, packer.compress(b"]"), packer.flush()])


def _serve(state: Hostile) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = json.dumps({"token_type": "Bearer", "expires_in": "3600", "access_token": TOKEN})
            self._head(200, len(body))
            self.wfile.write(body.encode())

        def _head(self, status: int, length: int) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(length))
            self.end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            done = state.done.setdefault(path, threading.Event())
            state.sent[path] = 0
            try:
                if path == "/huge":  # a valid 160 MB JSON array of numbers, in 64 KB pieces
                    self._head(200, HUGE)
                    for piece in _huge_body():
                        self.wfile.write(piece)
                        state.sent[path] += len(piece)
                elif path == "/trickle":  # 16 chunks, one per 0.5 s: 8 s for the whole body
                    self._head(200, 16 * 8)
                    for _ in range(16):
                        self.wfile.write(b"[1,2,3,]"[:8])
                        self.wfile.flush()
                        state.sent[path] += 8
                        time.sleep(0.5)
                elif path == "/gzip":  # 64 MB of JSON in 64 KB of gzip
                    body = _gzip_bomb()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    state.sent[path] = len(body)
                elif path == "/deep":  # 30 KB: an array holding 5,000 nested objects
                    body = b'[{"a":' + b'{"a":' * 5_000 + b"1" + b"}" * 5_001 + b"]"
                    self._head(200, len(body))
                    self.wfile.write(body)
                elif path == "/api/project":
                    body = b'[{"name": "p", "relativeUrl": "/project/p/"}]'
                    self._head(200, len(body))
                    self.wfile.write(body)
                elif path.endswith("/jobs"):
                    body = state.jobs
                    self._head(200, len(body))
                    self.wfile.write(body)
                elif path == "/bad-location":
                    self.send_response(302)
                    self.send_header("Location", state.location)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    body = b'{"version": "hostile"}'
                    self._head(200, len(body))
                    self.wfile.write(body)
            except OSError:
                pass  # the client hung up: what was sent is counted
            finally:
                done.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def hostile(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hostile]:
    state = Hostile(port=0)
    server = _serve(state)
    state.port = server.server_address[1]
    monkeypatch.setenv(
        "AIRFLOW_CONN_QUAMOTION_DEFAULT",
        json.dumps(
            {
                "conn_type": "quamotion",
                "host": f"http://127.0.0.1:{state.port}",
                "extra": {"api_key": API_KEY, "timeout": 2, "retry": {"max_attempts": 1}},
            }
        ),
    )
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


async def _first_event(trigger: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return await asyncio.wait_for(run(), 60)


def test_the_generic_sensor_stops_reading_a_huge_reply_at_its_budget(hostile: Hostile) -> None:
    from airflow_provider_quamotion.exceptions import QuamotionResponseError

    sensor = QuamotionSensor(task_id="huge", endpoint="/huge", poke_interval=1)
    with pytest.raises(QuamotionResponseError, match="longer than 16777216 bytes"):
        sensor.poke({})
    assert hostile.wait("/huge") < 48 * MB  # the budget (16 MB) plus socket buffers, not 160 MB


def test_the_http_trigger_refuses_a_huge_reply_while_reading_it(hostile: Hostile) -> None:
    trigger = QuamotionHttpTrigger(endpoint="/huge", poll_interval=0.1, deadline=time.time() + 30)
    event = asyncio.run(_first_event(trigger))
    assert hostile.wait("/huge") < 40 * MB  # max_event_bytes (64 KB) plus socket buffers
    assert event["status"] == "error"
    assert f"more than the {trigger.max_event_bytes} bytes" in event["message"]
    assert event["body"] is None


def test_a_path_checked_http_trigger_has_a_budget_too(hostile: Hostile) -> None:
    trigger = QuamotionHttpTrigger(
        endpoint="/huge",
        poll_interval=0.1,
        deadline=time.time() + 30,
        response_check_path="builtins.bool",
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "error"
    assert "longer than 16777216 bytes" in event["message"]
    assert hostile.wait("/huge") < 48 * MB


def test_a_trickled_body_cannot_keep_a_trigger_past_its_deadline(hostile: Hostile) -> None:
    start = time.monotonic()
    trigger = QuamotionHttpTrigger(endpoint="/trickle", poll_interval=0.1, deadline=time.time() + 2)
    event = asyncio.run(_first_event(trigger))
    elapsed = time.monotonic() - start
    assert event["status"] == "timeout"
    assert "still arriving at the deadline" in event["message"]
    assert elapsed < 6  # the whole body takes 8 s; the deadline is 2 s
    assert hostile.wait("/trickle") < 16 * 8


def test_a_trickled_body_cannot_keep_a_poke_past_the_timeout(hostile: Hostile) -> None:
    start = time.monotonic()
    sensor = QuamotionSensor(task_id="trickle", endpoint="/trickle", poke_interval=1)
    assert sensor.poke({}) is False  # a timeout: poke again later
    assert time.monotonic() - start < 6  # timeout 2 s for the whole body, which takes 8 s
    assert hostile.wait("/trickle") < 16 * 8


@pytest.mark.parametrize(
    ("jobs", "expected"),
    [
        (b'{"jobs": []}', "expected a JSON array"),
        (b"[1, 2, 3]", "expected an array of job objects, item 0 is a int"),
        (b'[[{"status": "success"}]]', "expected an array of job objects, item 0 is a list"),
        (b'[{"id": 7, "name": "pixel"}]', "expected each job to have a 'status' string, job 0 (id 7)"),
        (b"[" * 100_000 + b"]" * 100_000, "more than 64 levels deep"),
    ],
    ids=["object", "numbers", "nested", "no-status", "deep"],
)
def test_a_malformed_jobs_reply_is_one_response_error_naming_what_was_expected(
    hostile: Hostile, jobs: bytes, expected: str
) -> None:
    from airflow_provider_quamotion.exceptions import QuamotionResponseError
    from airflow_provider_quamotion.hooks.quamotion import QuamotionAsyncHook, QuamotionHook
    from airflow_provider_quamotion.triggers.quamotion import QuamotionTestRunTrigger

    hostile.jobs = jobs
    with pytest.raises(QuamotionResponseError, match=re.escape(expected)):
        QuamotionHook().list_jobs("r1")

    async def async_jobs() -> None:
        hook = QuamotionAsyncHook()
        try:
            await hook.list_jobs("r1")
        finally:
            await hook.aclose()

    with pytest.raises(QuamotionResponseError, match=re.escape(expected)):
        asyncio.run(async_jobs())
    trigger = QuamotionTestRunTrigger("r1", poll_interval=0.1, deadline=time.time() + 30)
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "error"
    assert "QuamotionResponseError" in event["message"] and expected in event["message"]


def test_a_compressed_reply_is_bounded_by_its_decoded_size(hostile: Hostile) -> None:
    assert len(_gzip_bomb()) < 16 * 1024 * 1024 // 64  # the compressed reply is far below the budget
    trigger = QuamotionHttpTrigger(
        endpoint="/gzip", poll_interval=0.1, deadline=time.time() + 30, response_check_path="builtins.bool"
    )
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "error"
    assert "longer than 16777216 bytes" in event["message"]


def test_a_compressed_reply_to_a_poke_is_bounded_by_its_decoded_size(hostile: Hostile) -> None:
    import tracemalloc

    from airflow_provider_quamotion.exceptions import QuamotionResponseError

    _gzip_bomb()  # built before measuring
    sensor = QuamotionSensor(task_id="gzip", endpoint="/gzip", poke_interval=1)
    tracemalloc.start()
    try:
        with pytest.raises(QuamotionResponseError, match="longer than 16777216 bytes"):
            sensor.poke({})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * MB  # the budget and a chunk, not the 64 MB the reply expands to


def test_a_deeply_nested_list_reply_costs_an_export_little(hostile: Hostile) -> None:
    import tracemalloc

    from airflow_provider_quamotion.exceptions import QuamotionResponseError
    from airflow_provider_quamotion.hooks.quamotion import QuamotionHook

    tracemalloc.start()
    try:
        with pytest.raises(QuamotionResponseError, match="more than 64 levels deep"):
            list(QuamotionHook().iter_records("/deep"))  # what the export reads lists with
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * MB
