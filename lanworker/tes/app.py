"""The TES 1.1 HTTP app (FastAPI): the request guard, the bearer token, the TES router
(`api.py`) under /ga4gh/tes/v1, /v1 and / alike with GetTask in front of it (`reads.py`),
health and metrics, and whatever routers the service adds (the status view).

Invariant: a request can never name an image outside the allowlist (the workers refuse it:
SYSTEM_ERROR), mount a host path or a network the worker did not allow; no browser on
another origin gets a request through (guard.py).
"""

from __future__ import annotations

import hmac

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.requests import HTTPConnection

from lanworker import __version__
from lanworker.reporting.metrics import CONTENT_TYPE
from lanworker.tes.api import describe_errors, error_response, router, unavailable
from lanworker.tes.guard import ASGIApp, Receive, RequestGuard, Scope, Send
from lanworker.tes.intake import Intake
from lanworker.tes.reads import StoreOutage, TaskReads
from lanworker.tes.service import TesService
from lanworker.tes.store import failures

PREFIXES = ("/ga4gh/tes/v1", "/v1", "")
OPEN_PATHS = ("/healthz", "/login")
TOKEN_COOKIE = "lanworker_token"
COOKIE_PREFIXES = ("/jobs/", "/fragments/", "/api/jobs")  # and "/": the status view, never TES


def takes_cookie(path: str) -> bool:
    """The status view's routes, where a signed-in browser's cookie stands for the token."""
    return path == "/" or path.startswith(COOKIE_PREFIXES)


def _authorised(request: HTTPConnection, token: str) -> bool:
    """A Bearer header (any client), or the sign-in cookie on the status view's routes only;
    compared in constant time."""
    header = request.headers.get("authorization", "")
    if hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return takes_cookie(request.url.path) and hmac.compare_digest(cookie.encode(), token.encode())


class TokenCheck:
    """ASGI middleware: every path but OPEN_PATHS needs the token (see _authorised); a
    browser asking for a page is sent to sign in, any other client gets 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        if _authorised(request, self.token):
            await self.app(scope, receive, send)
            return
        refusal: Response
        if scope["method"] == "GET" and "text/html" in request.headers.get("accept", ""):
            refusal = RedirectResponse("/login", status_code=303)  # a browser: sign in first
        else:
            refusal = JSONResponse(
                {"msg": "missing or wrong bearer token", "status_code": 401},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        await refusal(scope, receive, send)


def create_app(service: TesService, auth_token: str | None = None, loopback_only: bool = True) -> ASGIApp:
    """The API and whatever service.extra_routes add, as one ASGI app: the request guard,
    then the token check, then the task reads, in front of FastAPI's own stack, so every
    request passes the same checks and a poll of a task (most of a busy server's requests)
    passes through none of FastAPI's middleware. loopback_only: bound to loopback, so only
    loopback Host names are answered (see guard.py)."""
    app = FastAPI(title="lanworker TES", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_errors(exc.errors()))

    outage = StoreOutage()

    async def store_unavailable(request: Request, exc: Exception) -> Response:
        """A store that does not answer, on any route: a 503 (HTML for a browser's page)."""
        return unavailable(outage.failed(exc), html="text/html" in request.headers.get("accept", ""))

    for failure in failures():
        app.add_exception_handler(failure, store_unavailable)
    app.state.auth_token = auth_token
    app.state.service = service
    app.state.intake = Intake(service)
    for prefix in PREFIXES:
        app.include_router(router, prefix=prefix)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        healthy, details = service.health()
        return JSONResponse({"healthy": healthy, **details}, status_code=200 if healthy else 503)

    if service.metrics is not None:
        render = service.metrics

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(render(), media_type=CONTENT_TYPE)

    for extra in service.extra_routes:
        app.include_router(extra)
    # The checks wrap FastAPI, innermost last: the task reads run after every check.
    front: ASGIApp = TaskReads(app, store=service.store, prefixes=PREFIXES, outage=outage)
    if auth_token is not None:
        front = TokenCheck(front, token=auth_token)
    return RequestGuard(front, loopback_only=loopback_only)  # outside the token check
