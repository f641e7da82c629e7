"""The TES 1.1 routes, as one APIRouter: create_app mounts it under /ga4gh/tes/v1, /v1
and / alike. Each route reads the TesService of its app (`app.state.service`). GetTask,
the request engines poll with, is answered before this router (reads.py)."""

from __future__ import annotations

import logging
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from lanworker import __version__
from lanworker.core.errors import MessageRefused
from lanworker.tes.convert import TaskRefused, storage_schemes, to_tes
from lanworker.tes.intake import Intake
from lanworker.tes.models import State, TesTask
from lanworker.tes.service import CancelNotRecorded, NotQueued, StoreFull, TesService, tag_filter
from lanworker.tes.store import RecordFilter, RecordTooLarge

logger = logging.getLogger(__name__)

VIEWS = ("MINIMAL", "BASIC", "FULL")
RETRY_AFTER_S = 5  # what a 503 asks a client to wait before it tries again
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2047

router = APIRouter()


async def _service(request: Request) -> TesService:
    """The app's TesService (create_app puts it in app.state); the status view's routes
    take it the same way. async: FastAPI would run a plain function in a thread."""
    service: TesService = request.app.state.service
    return service


Service = Annotated[TesService, Depends(_service)]


class TaskQuery(BaseModel):
    """ListTasks' query parameters."""

    name_prefix: str | None = None
    state: State | None = None
    tag_key: list[str] = []
    tag_value: list[str] = []
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page_token: str | None = None
    view: str = "MINIMAL"


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"msg": message, "status_code": status}, status_code=status)


def unavailable(message: str, html: bool = False) -> Response:
    """A 503, for what did not answer (the store, the queue, a cancel marker's storage): JSON,
    or a page for a browser."""
    headers = {"retry-after": str(RETRY_AFTER_S)}
    if html:
        return HTMLResponse(f"<!doctype html><title>503</title><h1>{escape(message)}</h1>", 503, headers)
    response = error_response(503, message)
    response.headers.update(headers)
    return response


def describe_errors(errors: Any) -> str:
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or '$'}: {error.get('msg')}")
    return "; ".join(parts) or "invalid request"


@router.get("/service-info")
def service_info(service: Service) -> dict[str, Any]:
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


async def create_task(request: Request) -> Response:
    """POST /tasks: a plain route (FastAPI's parameter solving would take twice the time of
    the rest) for the rate engines submit at; the app's Intake writes the tasks that arrive
    together in one go. GET /tasks/ID is reads.py's."""
    body = await request.body()  # its size already checked by the guard, as it arrived
    intake: Intake = request.app.state.intake
    try:
        task = TesTask.model_validate_json(body)
        task_id = await intake.create(task)
    except ValidationError as exc:
        return error_response(400, describe_errors(exc.errors()))
    except (TaskRefused, RecordTooLarge, MessageRefused) as exc:  # the last two: too large
        return error_response(400, str(exc))
    except StoreFull as exc:
        return error_response(507, str(exc))
    except NotQueued as exc:
        logger.error("task not queued: %s", exc, extra={"action": "queued"})
        return unavailable(f"task not queued: {exc}")
    # A store that did not answer is create_app's 503; anything else is a bug, and a 500.
    return JSONResponse({"id": task_id})


router.add_route("/tasks", create_task, methods=["POST"], include_in_schema=False)


@router.get("/tasks")
def list_tasks(query: Annotated[TaskQuery, Query()], service: Service) -> JSONResponse:
    if query.view not in VIEWS:
        return error_response(400, f"view must be one of {', '.join(VIEWS)}")
    state = query.state.value if query.state else None
    matches = RecordFilter(state, query.name_prefix, tag_filter(query.tag_key, query.tag_value))
    try:
        records, next_token = service.store.page(matches, query.page_size, query.page_token or None)
    except ValueError as exc:
        return error_response(400, str(exc))
    document: dict[str, Any] = {"tasks": [to_tes(record, query.view) for record in records]}
    if next_token:
        document["next_page_token"] = next_token
    return JSONResponse(document)


@router.post("/tasks/{task_id}:cancel")
def cancel_task(task_id: str, service: Service) -> Response:
    try:
        record = service.cancel(task_id)
    except CancelNotRecorded as exc:  # a store that did not answer is create_app's 503
        return unavailable(f"cancel not recorded: {exc}")
    if record is None:
        return error_response(404, f"no task {task_id!r}")
    return JSONResponse({})
