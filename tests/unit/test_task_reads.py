"""GetTask (reads.py), answered in front of FastAPI: the whole app driven as ASGI, on a real
SQLite store and embedded queue, as a client and a hostile page would call it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from fastapi.responses import JSONResponse

from lanworker.queues import open_queue
from lanworker.tes.app import create_app
from lanworker.tes.models import TesTask
from lanworker.tes.store import Record, RecordFilter, SqliteTaskStore
from lanworker.web import csrf_for
from lanworker.web import router as status_view
from tests.helpers.serve_fixtures import in_process_service

TOKEN = "reads-token-0123456789"
PREFIXES = ("/ga4gh/tes/v1", "/v1", "")
TASK = json.dumps({"executors": [{"image": "busybox", "command": ["true"]}]}).encode()


class Answer:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.status: int = messages[0]["status"]
        self.headers = {name.decode(): value.decode() for name, value in messages[0]["headers"]}
        self.body = b"".join(message.get("body", b"") for message in messages[1:])

    def json(self) -> Any:
        return json.loads(self.body)


def call(app: Any, method: str, path: str, query: str = "", body: bytes = b"", **headers: str) -> Answer:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        "headers": [(k.encode(), v.encode()) for k, v in ({"host": "127.0.0.1:8000"} | headers).items()],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return Answer(sent)


@pytest.fixture
def tes(tmp_path: Path) -> tuple[Any, str]:
    """An app with one QUEUED task; the app and the task's id."""
    served = in_process_service(tmp_path, SqliteTaskStore(tmp_path / "tasks.db"))
    task = TesTask.model_validate({"name": "reads", "executors": [{"image": "busybox", "command": ["true"]}]})
    return create_app(served), served.create(task)


def test_every_prefix_and_view(tes: tuple[Any, str]) -> None:
    app, task_id = tes
    for prefix in PREFIXES:
        minimal = call(app, "GET", f"{prefix}/tasks/{task_id}")
        assert minimal.status == 200 and minimal.json() == {"id": task_id, "state": "QUEUED"}
        assert minimal.headers["content-type"] == "application/json"
        assert minimal.headers["x-frame-options"] == "DENY"  # the guard's headers, as on every route
        basic = call(app, "GET", f"{prefix}/tasks/{task_id}", "view=BASIC").json()
        assert basic["name"] == "reads" and basic["executors"][0]["image"] == "busybox"
        full = call(app, "GET", f"{prefix}/tasks/{task_id}", "view=FULL").json()
        assert full["creation_time"] == basic["creation_time"]
    assert call(app, "GET", f"/v1/tasks/{task_id}", "view=BASIC&view=MINIMAL").json()["state"] == "QUEUED"


def test_answers_are_utf8_json_of_their_own_length(tmp_path: Path) -> None:
    """Read answers are encoded here, not by a JSONResponse: the same bytes it would send."""
    served = in_process_service(tmp_path, SqliteTaskStore(tmp_path / "tasks.db"))
    task = TesTask.model_validate(
        {"name": "Zürich ✓", "executors": [{"image": "busybox", "command": ["true"]}]}
    )
    task_id = served.create(task)
    basic = call(create_app(served), "GET", f"/ga4gh/tes/v1/tasks/{task_id}", "view=BASIC")
    assert basic.json()["name"] == "Zürich ✓" and "Zürich ✓".encode() in basic.body
    assert basic.headers["content-length"] == str(len(basic.body))
    assert basic.headers["content-type"] == "application/json"
    assert basic.body == JSONResponse(basic.json()).body


def test_head_has_the_gets_headers(tes: tuple[Any, str]) -> None:
    app, task_id = tes
    head = call(app, "HEAD", f"/ga4gh/tes/v1/tasks/{task_id}")
    get = call(app, "GET", f"/ga4gh/tes/v1/tasks/{task_id}")
    assert head.status == 200 and head.headers["content-length"] == get.headers["content-length"]


def test_bad_views_unknown_ids_and_other_paths(tes: tuple[Any, str]) -> None:
    app, task_id = tes
    bad = call(app, "GET", f"/ga4gh/tes/v1/tasks/{task_id}", "view=HUGE")
    assert bad.status == 400 and "MINIMAL, BASIC, FULL" in bad.json()["msg"]
    unknown = call(app, "GET", "/ga4gh/tes/v1/tasks/no-such-task")
    assert unknown.status == 404 and unknown.json() == {"msg": "no task 'no-such-task'", "status_code": 404}
    assert call(app, "GET", f"/ga4gh/tes/v1/tasks/{task_id}/x").status == 404
    listing = call(app, "GET", "/ga4gh/tes/v1/tasks/")  # no id: on to FastAPI, which sends it to the list
    assert listing.status == 307 and listing.headers["location"].endswith("/ga4gh/tes/v1/tasks")
    assert call(app, "GET", "/ga4gh/tes/v1/tasks").json()["tasks"] == [{"id": task_id, "state": "QUEUED"}]
    assert call(app, "POST", f"/ga4gh/tes/v1/tasks/{task_id}:cancel").status == 200  # on to FastAPI
    assert call(app, "GET", f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"] == "CANCELING"


class FailingStore(SqliteTaskStore):
    """A store whose file went away while `down`: every read fails as SQLite's would."""

    down = True

    def _failing(self) -> None:
        if self.down:
            raise sqlite3.OperationalError("disk I/O error <b>")

    def state_of(self, task_id: str) -> str | None:
        self._failing()
        return super().state_of(task_id)

    def get(self, task_id: str) -> Record | None:
        self._failing()
        return super().get(task_id)

    def page(
        self, wanted: RecordFilter, page_size: int, page_token: str | None
    ) -> tuple[list[Record], str | None]:
        self._failing()
        return super().page(wanted, page_size, page_token)

    def create(self, record: Record) -> None:
        self._failing()
        super().create(record)


def test_a_store_that_does_not_answer_is_a_503_on_every_route_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lanworker.tes.reads")
    store = FailingStore(tmp_path / "tasks.db")
    served = in_process_service(tmp_path, store)
    served.extra_routes.append(status_view)
    app = create_app(served)
    for method, path, query in [
        ("POST", "/ga4gh/tes/v1/tasks", ""),
        ("POST", "/ga4gh/tes/v1/tasks/some-task:cancel", ""),
        ("GET", "/ga4gh/tes/v1/tasks/some-task", ""),
        ("GET", "/ga4gh/tes/v1/tasks/some-task", "view=FULL"),
        ("GET", "/v1/tasks/some-task", "view=BASIC"),
        ("GET", "/ga4gh/tes/v1/tasks", ""),
        ("GET", "/ga4gh/tes/v1/tasks", "state=RUNNING&view=BASIC"),
        ("GET", "/api/jobs", ""),
        ("GET", "/fragments/jobs", ""),
        ("GET", "/jobs/some-task", ""),
    ]:
        answer = call(app, method, path, query, body=TASK)
        assert answer.status == 503, (path, answer.status)
        assert answer.json()["msg"] == "the task store did not answer: disk I/O error <b>", path
        assert answer.headers["retry-after"] == "5" and answer.headers["x-frame-options"] == "DENY"
    page = call(app, "GET", "/", accept="text/html,application/xhtml+xml")  # a browser, signed in
    assert page.status == 503 and page.headers["content-type"].startswith("text/html")
    assert b"disk I/O error &lt;b&gt;" in page.body and b"<b>" not in page.body  # escaped
    store.down = False
    assert call(app, "GET", "/ga4gh/tes/v1/tasks/some-task").status == 404
    assert call(app, "GET", "/ga4gh/tes/v1/tasks").json() == {"tasks": []}
    said = [record.getMessage() for record in caplog.records if record.name == "lanworker.tes.reads"]
    assert said == [
        "the task store did not answer: disk I/O error <b>",
        "the task store answers again",
    ]


def test_a_bug_in_a_store_is_not_taken_for_an_outage(tmp_path: Path) -> None:
    class BrokenStore(SqliteTaskStore):
        def state_of(self, task_id: str) -> str | None:
            raise TypeError("a bug")

        def create(self, record: Record) -> None:
            raise TypeError("a bug in create")

        def get(self, task_id: str) -> Record | None:
            raise TypeError("a bug in get")

    app = create_app(in_process_service(tmp_path, BrokenStore(tmp_path / "tasks.db")))
    for method, path, bug in [
        ("GET", "/ga4gh/tes/v1/tasks/some-task", "a bug"),
        ("POST", "/ga4gh/tes/v1/tasks", "a bug in create"),  # was a 503 'task not queued'
        ("POST", "/ga4gh/tes/v1/tasks/some-task:cancel", "a bug in get"),  # was a 503 too
    ]:
        with pytest.raises(TypeError, match=bug):  # Starlette's 500, and the traceback in the log
            call(app, method, path, body=TASK)


def test_a_queue_that_does_not_take_a_task_is_a_503_and_the_task_a_system_error(tmp_path: Path) -> None:
    served = in_process_service(tmp_path, SqliteTaskStore(tmp_path / "tasks.db"))
    (tmp_path / "gone.db").mkdir()  # no queue file can be opened there
    served.queue = open_queue(f"local:{tmp_path}/gone.db#tasks")
    answer = call(create_app(served), "POST", "/ga4gh/tes/v1/tasks", body=TASK)
    assert answer.status == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["msg"].startswith("task not queued: cannot open local queue")
    [record] = served.store.page(RecordFilter(None, None, {}), 10, None)[0]
    assert record["state"] == "SYSTEM_ERROR" and "not queued" in record["system_logs"][-1]


def test_a_cancel_whose_marker_cannot_be_written_is_a_503(tes: tuple[Any, str], tmp_path: Path) -> None:
    app, task_id = tes
    (tmp_path / "control").write_text("a file where the markers' directory belongs")
    answer = call(app, "POST", f"/ga4gh/tes/v1/tasks/{task_id}:cancel")
    assert answer.status == 503 and answer.json()["msg"].startswith("cancel not recorded: ")
    assert call(app, "GET", f"/ga4gh/tes/v1/tasks/{task_id}").json()["state"] == "QUEUED"  # nothing changed


def test_reads_pass_the_guard_and_the_token_check(tmp_path: Path) -> None:
    served = in_process_service(tmp_path, SqliteTaskStore(tmp_path / "tasks.db"))
    task_id = served.create(
        TesTask.model_validate({"executors": [{"image": "busybox", "command": ["true"]}]})
    )
    app = create_app(served, auth_token=TOKEN)
    path = f"/ga4gh/tes/v1/tasks/{task_id}"
    right = {"authorization": f"Bearer {TOKEN}"}
    assert call(app, "GET", path, **right).json()["state"] == "QUEUED"
    for headers in ({}, {"authorization": f"Bearer {TOKEN}x"}, {"cookie": f"lanworker_token={TOKEN}"}):
        assert call(app, "GET", path, **headers).status == 401, headers
        assert call(app, "HEAD", path, **headers).status == 401, headers
    assert call(app, "GET", path, origin="http://evil.example", **right).status == 403
    assert call(app, "GET", path, **{"sec-fetch-site": "cross-site"}, **right).status == 403
    rebound = call(app, "GET", path, host="evil.example:8000", **right)
    assert rebound.status == 403


def test_the_status_pages_cancel_without_its_marker_is_a_503_page(tmp_path: Path) -> None:
    served = in_process_service(tmp_path, SqliteTaskStore(tmp_path / "tasks.db"))
    served.extra_routes.append(status_view)
    task_id = served.create(TesTask.model_validate(json.loads(TASK)))
    (tmp_path / "control").write_text("a file where the markers' directory belongs")
    form = f"csrf={csrf_for(task_id)}".encode()
    answer = call(
        create_app(served), "POST", f"/jobs/{task_id}/cancel", body=form,
        **{"content-type": "application/x-www-form-urlencoded", "origin": "http://127.0.0.1:8000"},
    )  # fmt: skip
    assert answer.status == 503 and answer.headers["content-type"].startswith("text/html")
    assert b"cancel not recorded: " in answer.body
    assert served.store.state_of(task_id) == "QUEUED"
