"""What every request to `serve` must pass before any route sees it (pure ASGI, outermost).

Invariant: a route never sees a request that
- names a `Host` other than a loopback name while the server is bound to loopback (a DNS
  rebinding page reaches 127.0.0.1 under its own name);
- carries an `Origin` other than the server's own, or `Sec-Fetch-Site: cross-site` (a page
  on another site posting a form or a no-cors fetch);
- posts to the API (anything but the status view's own forms) a body that is not JSON
  (`text/plain` and form encodings are what a page may send without a CORS preflight);
- has a body longer than its route's limit: bytes are counted while they stream in, so a
  chunked body without a `Content-Length` stops at the limit, not at the end of memory.
Every response carries headers that forbid framing and MIME sniffing.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024  # a TES task, inline content included
MAX_FORM_BYTES = 4 * 1024  # the status view's forms: sign-in and cancel
FORM_PATHS = ("/login",)  # and /jobs/ID/cancel, matched in form_route
LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON_TYPES = ("application/json",)
COMMON_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
COMMON_NAMES = frozenset(name for name, _ in COMMON_HEADERS)


def form_route(path: str) -> bool:
    """The status view's own HTML forms (urlencoded bodies, a CSRF token or the sign-in)."""
    return path in FORM_PATHS or (path.startswith("/jobs/") and path.endswith("/cancel"))


@functools.lru_cache(maxsize=256)  # asked for every request's Host
def is_loopback_host(host: str) -> bool:
    """A bind address or a Host name that stays on this machine."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """'name:port' or '[v6]:port' without the port."""
    if host_header.startswith("["):
        return host_header[: host_header.find("]") + 1] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def body_limit(path: str) -> int:
    return MAX_FORM_BYTES if form_route(path) else MAX_BODY_BYTES


def refusal(scope: Scope, loopback_only: bool) -> Refusal | None:
    """Why this request's head is refused, or None."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    host = headers.get("host", "")
    if loopback_only and not is_loopback_host(host_name(host)):
        return Refusal(403, f"Host {host!r} is not this server's: it answers loopback names only")
    origin = headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1].rstrip("/").lower() != host.lower():
        return Refusal(403, f"cross-origin request from {origin!r} refused")
    if headers.get("sec-fetch-site") == "cross-site":
        return Refusal(403, "cross-site request refused")
    method = scope.get("method", "GET")
    if method not in SAFE_METHODS and not form_route(scope.get("path", "")):
        kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if kind and kind not in JSON_TYPES:
            return Refusal(415, f"request bodies must be application/json, not {kind!r}")
    length = headers.get("content-length")
    limit = body_limit(scope.get("path", ""))
    if length is not None and (not length.isdigit() or int(length) > limit):
        return too_large(limit)
    return None


def too_large(limit: int) -> Refusal:
    return Refusal(413, f"request bodies are limited to {limit} bytes here")


class RequestGuard:
    """ASGI middleware applying `refusal` and counting body bytes; see the module docstring."""

    def __init__(self, app: ASGIApp, loopback_only: bool) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = _with_common_headers(send)
        refused = refusal(scope, self.loopback_only)
        if refused is None:
            limit = body_limit(scope["path"])
            body = await _read_body(receive, limit)
            if body is None:
                refused = too_large(limit)
            else:
                await self.app(scope, _replay(body, receive), send)
                return
        await _send_refusal(send, refused.status, refused.message)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes limit (the rest is never read)."""
    parts: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; the app sees an empty body and its own disconnect
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as uvicorn would

    return replayed


def _with_common_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", [])
            present = COMMON_NAMES.intersection(name.lower() for name, _ in headers)
            message["headers"] = [*headers, *(item for item in COMMON_HEADERS if item[0] not in present)]
        await send(message)

    return sending


async def _send_refusal(send: Send, status: int, text: str) -> None:
    body = json.dumps({"msg": text, "status_code": status}).encode()
    await send_json(send, status, body, *([(b"connection", b"close")] if status == 413 else []))


async def send_json(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """A JSON answer already encoded, as two ASGI messages (what a Starlette JSONResponse
    sends, without building one)."""
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
