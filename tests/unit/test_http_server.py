"""uvicorn as serve runs it sends each response in one write: its protocol, from serve's own
configuration, driven with a transport that records every write it is asked for."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from uvicorn.server import ServerState

from lanworker.tes.server import JOIN_MAX_BYTES, CoalescingTransport, uvicorn_config


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def body_app(body: bytes) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_one(body: bytes, requests: int = 1, headers: bytes = b"") -> RecordingTransport:
    """serve's protocol answering `requests` GETs on one connection."""

    async def run() -> RecordingTransport:
        config = uvicorn_config(body_app(body), "127.0.0.1", 0)
        config.load()
        protocol = config.http_protocol_class(config, ServerState(), {}, asyncio.get_running_loop())  # type: ignore[call-arg]
        transport = RecordingTransport()
        protocol.connection_made(transport)
        request = b"GET /v1/tasks/x?view=MINIMAL HTTP/1.1\r\nHost: a\r\n" + headers + b"\r\n"
        protocol.data_received(request * requests)
        for _ in range(100):
            await asyncio.sleep(0)
            if sum(write.count(b"HTTP/1.1 200") for write in transport.writes) == requests:
                break
        await asyncio.sleep(0)  # the turn after the last write: anything held has gone out
        protocol.connection_lost(None)
        return transport

    return asyncio.run(run())


def test_a_small_response_is_one_write() -> None:
    transport = serve_one(b'{"id":"x","state":"RUNNING"}')
    [response] = transport.writes
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b'\r\n\r\n{"id":"x","state":"RUNNING"}')


def test_an_upgrade_request_is_answered_as_plain_http() -> None:
    """No route takes a WebSocket: whatever libraries are installed, the request is HTTP."""
    transport = serve_one(
        b"{}", headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    )
    [response] = transport.writes
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"{}")


def test_pipelined_requests_are_each_answered_whole_and_in_order() -> None:
    transport = serve_one(b"{}", requests=3)
    sent = b"".join(transport.writes)
    assert sent.count(b"HTTP/1.1 200 OK") == 3
    assert all(part.endswith(b"{}") for part in sent.split(b"HTTP/1.1 200 OK")[1:])


def test_a_large_body_is_not_copied_into_a_join() -> None:
    body = b"x" * JOIN_MAX_BYTES
    transport = serve_one(body)
    assert len(transport.writes) == 2
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK") and transport.writes[0].endswith(b"\r\n\r\n")
    assert transport.writes[1] == body


@pytest.mark.parametrize("end", ["close", "write_eof"])
def test_a_close_sends_what_is_held_first(end: str) -> None:
    async def run() -> RecordingTransport:
        inner = RecordingTransport()
        inner.can_write_eof = lambda: True  # type: ignore[method-assign]
        inner.write_eof = lambda: inner.writes.append(b"<eof>")  # type: ignore[method-assign]
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"a")
        transport.write(bytearray(b"b"))
        assert inner.writes == []
        getattr(transport, end)()
        await asyncio.sleep(0)
        return inner

    inner = asyncio.run(run())
    assert inner.writes[0] == b"ab"
    assert inner.closed == (end == "close")


def test_an_abort_drops_what_is_held_and_nothing_is_written_after_a_close() -> None:
    async def run() -> RecordingTransport:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"dropped")
        transport.abort()
        await asyncio.sleep(0)
        return inner

    inner = asyncio.run(run())
    assert inner.aborted and inner.writes == []

    async def after_close() -> RecordingTransport:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())
        transport.write(b"held")
        inner.closed = True  # the peer went away before the turn ended
        await asyncio.sleep(0)
        return inner

    assert asyncio.run(after_close()).writes == []
