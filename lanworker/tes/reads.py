"""GET /tasks/ID[?view=]: the request workflow engines send for every task every few
seconds, answered as plain ASGI in front of FastAPI's middleware and router.

Polls are most of a busy `serve`'s requests (Nextflow-like: 5,000 a second from 200
clients, benchmarks/polling.py). FastAPI's stack of exception, body-limit, telemetry and
exit-stack middleware and its router took about 50 us of the 67 us one poll cost inside
the app; here the whole answer takes about 12 us: a MINIMAL view reads the task's state
alone, never its record, and a found task's JSON is encoded and sent as two ASGI messages,
no Response object built.

Invariant: this is the route's one implementation (the TES router has no GET /tasks/ID);
create_app puts it inside the request guard and the token check and in front of FastAPI,
so a poll passes every check any other route does and none of FastAPI's middleware. Every
other request, and any method but GET and HEAD on this path (POST /tasks/ID:cancel), goes
on to FastAPI unchanged.

A store that does not answer is a 503 here and on every other route (create_app hands
those routes' failures to the same `StoreOutage`), logged once an outage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from lanworker.tes.api import VIEWS, error_response, unavailable
from lanworker.tes.convert import to_tes
from lanworker.tes.guard import ASGIApp, Receive, Scope, Send, send_json
from lanworker.tes.store import TaskStore, failures

logger = logging.getLogger(__name__)
T = TypeVar("T")
PLAIN_VIEWS = {f"view={view}".encode(): view for view in VIEWS}


class StoreOutage:
    """The store's failures to answer, as one log line when they start and one when reads
    succeed again: polls come by the thousand a second, and each would log otherwise."""

    def __init__(self) -> None:
        self.failing = False

    def failed(self, exc: Exception) -> str:
        """What the 503 says."""
        if not self.failing:
            logger.warning("the task store did not answer: %s", exc, extra={"action": "read"})
        self.failing = True
        return f"the task store did not answer: {exc}"

    def answered(self) -> None:
        if self.failing:
            logger.info("the task store answers again", extra={"action": "read"})
        self.failing = False


class TaskReads:
    """ASGI middleware answering GET and HEAD of `{prefix}/tasks/{id}` from the store."""

    def __init__(
        self, app: ASGIApp, store: TaskStore, prefixes: tuple[str, ...], outage: StoreOutage
    ) -> None:
        self.app = app
        self.store = store
        self.paths = tuple(f"{prefix}/tasks/" for prefix in prefixes)
        self.outage = outage
        self.failures = failures()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = self._task_id(scope)
        if task_id is None:
            await self.app(scope, receive, send)
            return
        answer = await self._answer(task_id, _view(scope))
        if isinstance(answer, bytes):
            await send_json(send, 200, answer)
        else:
            await answer(scope, receive, send)

    def _task_id(self, scope: Scope) -> str | None:
        """The id this request reads, or None when it is not a task read."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return None
        path: str = scope["path"]
        for prefix in self.paths:
            if path.startswith(prefix):
                task_id = path[len(prefix) :]
                return task_id if task_id and "/" not in task_id else None
        return None

    async def _answer(self, task_id: str, view: str) -> bytes | Response:
        """The task's document in view, encoded as a JSONResponse would; or the refusal."""
        if view not in VIEWS:
            return error_response(400, f"view must be one of {', '.join(VIEWS)}")
        try:
            document = await self._read(task_id, view)
        except self.failures as exc:
            return unavailable(self.outage.failed(exc))
        self.outage.answered()
        if document is None:
            return error_response(404, f"no task {task_id!r}")
        return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()

    async def _read(self, task_id: str, view: str) -> dict[str, Any] | None:
        """The task's TES document in view, read here in the event loop from a local store
        (a SQLite file answers in less time than the hop to a thread takes), from a thread
        when the read goes over the network."""
        if view == "MINIMAL":
            state = await self._call(self.store.state_of, task_id)
            return None if state is None else {"id": task_id, "state": state}
        record = await self._call(self.store.get, task_id)
        return None if record is None else to_tes(record, view)

    async def _call(self, read: Callable[[str], T], task_id: str) -> T:
        return await run_in_threadpool(read, task_id) if self.store.remote else read(task_id)


def _view(scope: Scope) -> str:
    """The view the query string names (the last `view=` wins, as in Starlette), MINIMAL by default."""
    query: bytes = scope.get("query_string", b"")
    if b"view=" not in query:
        return "MINIMAL"
    if query in PLAIN_VIEWS:  # the usual `view=NAME` alone, found without parsing
        return PLAIN_VIEWS[query]
    return dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True)).get("view", "MINIMAL")
