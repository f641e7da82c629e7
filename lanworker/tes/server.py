"""uvicorn as `serve` runs it: httptools, no WebSocket upgrades (no route takes one), no
access log, and one send per response: what a connection writes in one turn of the event
loop goes out as one write.

uvicorn writes a response's status line and headers when the app starts the response, and
its body when the app sends it: two send() calls, two TCP segments, and on a keep-alive
connection two wake-ups of the client, for every small JSON answer (a workflow engine's
poll of a task is one). Both writes happen in the same turn of the loop (the app sends the
body right after the start), so holding writes until the turn ends joins them.

Invariant: bytes go out in the order they were written, and none are held past the end of
the turn in which they were written, or past a close. A large write is not copied into a
join: what is held is sent first, then it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from lanworker.tes.guard import ASGIApp

JOIN_MAX_BYTES = 64 * 1024  # larger writes go out as they are, after what is held


class CoalescingTransport(asyncio.Transport):
    """A connection's transport whose writes of one loop turn are sent together."""

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._inner = inner
        self._loop = loop
        self._held: list[bytes] = []
        self._flush_scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) >= JOIN_MAX_BYTES:
            self.flush()
            self._inner.write(data)
            return
        self._held.append(bytes(data))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        if not self._inner.is_closing():
            self._inner.write(data)

    def close(self) -> None:
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        self._held.clear()
        self._inner.abort()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size() + sum(len(data) for data in self._held)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._inner.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, writing through a CoalescingTransport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))


def uvicorn_config(app: ASGIApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=CoalescingHttpToolsProtocol,
        ws="none",  # an Upgrade request is answered as the plain HTTP request it also is
        log_config=None,  # lanworker's JSON logging stays as configured
        access_log=False,
        lifespan="off",
    )
