"""A lean HTTP/1.1 client for load tests: one keep-alive connection, one request in
flight, in asyncio on uvloop, so that thousands of requests a second cost the client little
(on one machine its CPU is taken from the server it measures: 46 us a request here against
68 us on asyncio's own loop with a timer a request)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight: `answered` gets the
    status once the whole response (Content-Length) has arrived."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.answered: asyncio.Future[int] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        if len(self.buffer) < end + 4 + length:
            return
        del self.buffer[: end + 4 + length]
        if self.answered is not None and not self.answered.done():
            self.answered.set_result(int(head[9:12]))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(ConnectionError("closed"))


def request_bytes(method: str, path: str, port: int, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def connect(port: int) -> tuple[asyncio.Transport, Connection]:
    transport, connection = await asyncio.get_running_loop().create_connection(Connection, "127.0.0.1", port)
    return transport, connection


async def exchange(transport: asyncio.Transport, connection: Connection, request: bytes) -> int:
    """Send one request; its response's status. No timer of its own (one a request would cost
    the client a third of its CPU): run the clients with `run_clients`."""
    connection.answered = asyncio.get_running_loop().create_future()
    transport.write(request)
    return await connection.answered


def run_clients(clients: Coroutine[Any, Any, T], limit_s: float) -> T:
    """Run the clients' coroutine on uvloop (as serve runs), failing after limit_s."""
    return uvloop.run(asyncio.wait_for(clients, timeout=limit_s))
