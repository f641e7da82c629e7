"""The TES 1.1 HTTP API (FastAPI), served under /ga4gh/tes/v1, /v1 and / alike.

Invariant: a task is stored (QUEUED) before its message is sent, so every event a worker
publishes finds its task; a request can never name an image outside the allowlist (the
workers refuse it: SYSTEM_ERROR), mount a host path or a network the worker did not allow.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from lanworker import __version__
from lanworker.core.errors import MessageRefused
from lanworker.message.policy import MessagePolicy
from lanworker.queues import Queue
from lanworker.storage import Storage
from lanworker.storage.control import request_cancel
from lanworker.tes.convert import (
    TaskRefused,
    new_record,
    new_task_id,
    storage_schemes,
    task_to_message,
    to_tes,
)
from lanworker.tes.guard import RequestGuard
from lanworker.tes.models import State, TesTask
from lanworker.tes.store import Record, RecordTooLarge, TaskStore

logger = logging.getLogger(__name__)

PREFIXES = ("/ga4gh/tes/v1", "/v1", "")
VIEWS = ("MINIMAL", "BASIC", "FULL")
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047


@dataclass
class TesService:
    store: TaskStore
    queue: Queue
    control_url: str
    storage: Storage
    policy: MessagePolicy  # what a task may name (file:// only when and where the operator allows)
    health: Callable[[], tuple[bool, dict[str, object]]] = lambda: (True, {})
    metrics: Callable[[], bytes] | None = None
    extra_routes: list[Callable[[FastAPI, TesService], None]] = field(default_factory=list)
    max_store_bytes: int | None = None  # --max-store-mb: refuse new tasks beyond it (507)

    # ----------------------------------------------------------------- operations
    def create(self, task: TesTask) -> str:
        task_id = new_task_id()
        message, notes = task_to_message(task, task_id, self.policy)
        record = new_record(task, task_id, notes)
        self._check_room(record)
        self.store.create(record)
        try:
            self.queue.send(json.dumps(message))
        except Exception as exc:
            error = str(exc)
            self.store.update(task_id, lambda r: _failed_to_queue(r, error))
            raise
        logger.info("task %s queued", task_id, extra={"job_id": task_id, "action": "queued"})
        return task_id

    def _check_room(self, record: Record) -> None:
        if self.max_store_bytes is None:
            return
        used = self.store.stored_bytes()
        if used + len(json.dumps(record)) > self.max_store_bytes:
            raise StoreFull(
                f"the task store holds {used} bytes of its {self.max_store_bytes} (--max-store-mb): "
                "new tasks are refused until old ones are pruned (serve --keep-days)"
            )

    def cancel(self, task_id: str) -> Record | None:
        record = self.store.get(task_id)
        if record is None or State(record["state"]).is_final:
            return record
        request_cancel(self.storage, self.control_url, task_id, "tes")
        return self.store.update(task_id, _cancel_requested)


class StoreFull(Exception):
    """The store reached --max-store-mb: 507 Insufficient Storage, with the reason."""


def _failed_to_queue(record: Record | None, error: str) -> Record | None:
    if record is None:
        return None
    return {
        **record,
        "state": State.SYSTEM_ERROR.value,
        "system_logs": [*record["system_logs"], f"not queued: {error}"],
    }


def _cancel_requested(record: Record | None) -> Record | None:
    if record is None or State(record["state"]).is_final:
        return None
    return {**record, "cancel_requested": True, "state": State.CANCELING.value}


def tag_filter(keys: list[str], values: list[str]) -> dict[str, str]:
    """tag_key and tag_value zipped; a key without a value matches any value."""
    return {key: values[index] if index < len(values) else "" for index, key in enumerate(keys)}


def matcher(name_prefix: str | None, state: str | None, tags: dict[str, str]) -> Callable[[Record], bool]:
    def matches(record: Record) -> bool:
        if name_prefix and not (record.get("name") or "").startswith(name_prefix):
            return False
        if state and record["state"] != state:
            return False
        own = record.get("tags") or {}
        return all(key in own and (not value or own[key] == value) for key, value in tags.items())

    return matches


OPEN_PATHS = ("/healthz", "/login")
TOKEN_COOKIE = "lanworker_token"
COOKIE_PREFIXES = ("/jobs/", "/fragments/", "/api/jobs")  # and "/": the status view, never TES


def takes_cookie(path: str) -> bool:
    """The status view's routes, where a signed-in browser's cookie stands for the token."""
    return path == "/" or path.startswith(COOKIE_PREFIXES)


def _authorised(request: Request, token: str) -> bool:
    """A Bearer header (any client), or the sign-in cookie on the status view's routes only;
    compared in constant time."""
    header = request.headers.get("authorization", "")
    if hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
        return True
    cookie = request.cookies.get(TOKEN_COOKIE, "")
    return takes_cookie(request.url.path) and hmac.compare_digest(cookie.encode(), token.encode())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"msg": message, "status_code": status}, status_code=status)


def create_app(service: TesService, auth_token: str | None = None, loopback_only: bool = True) -> FastAPI:
    """The API and whatever service.extra_routes add. loopback_only: bound to loopback, so
    only loopback Host names are answered (see guard.py)."""
    app = FastAPI(title="lanworker TES", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _describe(exc.errors()))

    app.state.auth_token = auth_token

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if (
            auth_token is not None
            and request.url.path not in OPEN_PATHS
            and not _authorised(request, auth_token)
        ):
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                return RedirectResponse("/login", status_code=303)  # a browser: sign in first
            return JSONResponse(
                {"msg": "missing or wrong bearer token", "status_code": 401},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    app.add_middleware(RequestGuard, loopback_only=loopback_only)  # outside the token check

    for prefix in PREFIXES:
        _routes(app, service, prefix)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        healthy, details = service.health()
        return JSONResponse({"healthy": healthy, **details}, status_code=200 if healthy else 503)

    if service.metrics is not None:
        render = service.metrics

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(render(), media_type="text/plain; version=0.0.4")

    for extra in service.extra_routes:
        extra(app, service)
    return app


def _describe(errors: Any) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or '$'}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


def _routes(app: FastAPI, service: TesService, prefix: str) -> None:
    @app.get(f"{prefix}/service-info")
    def service_info() -> dict[str, Any]:
        return {
            "id": "org.lanworker.tes",
            "name": "lanworker",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "GA4GH TES on lanworker: container tasks on an SQS or embedded queue",
            "organization": {"name": "lanworker", "url": "https://lanworker.invalid/"},
            "version": __version__,
            "storage": storage_schemes(service.policy),
            "tesResources_backend_parameters": [],
        }

    @app.post(f"{prefix}/tasks")
    async def create_task(request: Request) -> JSONResponse:
        body = await request.body()  # its size already checked by the guard, as it arrived
        try:
            task = TesTask.model_validate_json(body)
            task_id = service.create(task)
        except ValidationError as exc:
            return _error(400, _describe(exc.errors()))
        except (TaskRefused, RecordTooLarge, MessageRefused) as exc:  # the last two: too large
            return _error(400, str(exc))
        except StoreFull as exc:
            return _error(507, str(exc))
        except Exception as exc:
            logger.error("task not queued: %s", exc, extra={"action": "queued"})
            return _error(503, f"task not queued: {exc}")
        return JSONResponse({"id": task_id})

    @app.get(f"{prefix}/tasks")
    def list_tasks(
        name_prefix: str | None = None,
        state: State | None = None,
        tag_key: list[str] = Query(default=[]),  # noqa: B008 - FastAPI's idiom
        tag_value: list[str] = Query(default=[]),  # noqa: B008
        page_size: int = Query(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
        page_token: str | None = None,
        view: str = "MINIMAL",
    ) -> JSONResponse:
        if view not in VIEWS:
            return _error(400, f"view must be one of {', '.join(VIEWS)}")
        matches = matcher(name_prefix, state.value if state else None, tag_filter(tag_key, tag_value))
        try:
            records, next_token = service.store.page(matches, page_size, page_token or None)
        except ValueError as exc:
            return _error(400, str(exc))
        document: dict[str, Any] = {"tasks": [to_tes(record, view) for record in records]}
        if next_token:
            document["next_page_token"] = next_token
        return JSONResponse(document)

    @app.get(prefix + "/tasks/{task_id}")
    def get_task(task_id: str, view: str = "MINIMAL") -> JSONResponse:
        if view not in VIEWS:
            return _error(400, f"view must be one of {', '.join(VIEWS)}")
        record = service.store.get(task_id)
        if record is None:
            return _error(404, f"no task {task_id!r}")
        return JSONResponse(to_tes(record, view))

    @app.post(prefix + "/tasks/{task_id}:cancel")
    def cancel_task(task_id: str) -> JSONResponse:
        try:
            record = service.cancel(task_id)
        except Exception as exc:
            return _error(503, f"cancel not recorded: {exc}")
        if record is None:
            return _error(404, f"no task {task_id!r}")
        return JSONResponse({})
