"""The status view in a real headless Chromium, and `worker.py jobs` as a subprocess, against a
running `serve` whose store holds jobs in every state (projected from injected events)."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn

from lanworker.queues import LocalQueue
from lanworker.tes.app import create_app
from lanworker.tes.store import Record, RecordFilter, SqliteTaskStore
from lanworker.web import router as status_router
from tests.helpers.browser import chromium
from tests.helpers.moto import free_port
from tests.helpers.processes import REPO_ROOT, answers, run_cli, start_cli, wait_until
from tests.helpers.serve_fixtures import in_process_service

SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
HOSTILE = "<script>alert(1)</script>"


def browse(
    url: str, screenshot: str | None = None, width: int = 1300, height: int = 1000, after_ms: int = 0
) -> str:
    """The DOM after scripts ran (for after_ms of the page's virtual time: its timers fire),
    as Chromium sees it; a screenshot when asked."""
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        *([f"--virtual-time-budget={after_ms}"] if after_ms else []),
    ]
    if screenshot:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / screenshot
        subprocess.run([*args, f"--screenshot={path}", url], capture_output=True, timeout=90, check=False)
        assert path.exists() and path.stat().st_size > 10_000, f"no screenshot of {url}"
    completed = subprocess.run(
        [*args, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=False
    )
    assert "<html" in completed.stdout, completed.stderr[-2000:]
    return completed.stdout


def event(job_id: str, state: str, **details: Any) -> str:
    return json.dumps(
        {
            "job_id": job_id,
            "worker_id": details.pop("worker", "worker-a"),
            "state": state,
            "timestamp": time.time(),
            **details,
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    state_dir = tmp_path_factory.mktemp("status")
    port = free_port()
    process = start_cli(
        "serve", "--port", str(port), "--workers", "0", "--state-dir", str(state_dir), "--log-format", "json",
        log_path=state_dir / "serve.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: answers(f"{url}/healthz"), 60, "serve")
    events = LocalQueue(f"local:{state_dir / 'serve.db'}#events")
    result = {"service": "tool", "exit_code": 0, "stdout": {"text": f"line one\n{HOSTILE}\n"}, "stderr": {"text": ""},
              "outputs": [{"uri": "s3://b/out.txt", "size": 3, "sha256": "ab" * 32, "md5": "c" * 32}]}  # fmt: skip
    timeline = {
        "job-complete": [("received", {}), ("running", {}), ("succeeded", {"result": result})],
        "job-failed": [
            ("running", {}),
            ("failed", {"reason": "exit-code", "result": {**result, "exit_code": 3}}),
        ],
        "job-system": [
            ("received", {}),
            (
                "failed",
                {
                    "reason": "missing-object",
                    "result": {**result, "exit_code": None, "error": "input missing"},
                },
            ),
        ],
        "job-running": [("received", {"worker": "worker-b"}), ("running", {"worker": "worker-b"})],
        "job-initializing": [("received", {})],
        "job-canceled": [("running", {}), ("canceled", {"result": result})],
        HOSTILE: [("running", {}), ("succeeded", {"result": result})],
    }
    for job_id, steps in timeline.items():
        for state, details in steps:
            events.send(event(job_id, state, **details))
    api = f"{url}/ga4gh/tes/v1/tasks"
    queued = requests.post(
        api,
        json={"name": "waiting", "tags": {"team": HOSTILE}, "executors": [{"image": "i", "command": ["x"]}]},
        timeout=5,
    ).json()["id"]
    canceling = requests.post(
        api, json={"name": "to-cancel", "executors": [{"image": "i", "command": ["x"]}]}, timeout=5
    ).json()["id"]
    events.send(event(canceling, "running"))
    wait_until(
        lambda: _state(url, "job-canceled") == "CANCELED" and _state(url, canceling) == "RUNNING",
        30,
        "the projection",
    )
    yield {"url": url, "queued": queued, "canceling": canceling, "events": events}
    process.terminate()
    process.wait(timeout=60)


def _state(url: str, job_id: str) -> str | None:
    response = requests.get(f"{url}/api/jobs/{requests.utils.quote(job_id, safe='')}", timeout=5)
    return response.json()["state"] if response.status_code == 200 else None


def rows(dom: str) -> list[str]:
    body = dom.split('id="job-rows"', 1)[1].split("</tbody>", 1)[0]
    return [unescape(re.sub(r"<[^>]+>", " ", row)) for row in body.split("<tr>")[1:]]


def test_the_list_shows_every_state_with_counts(server: dict[str, Any]) -> None:
    dom = browse(server["url"] + "/", screenshot="jobs-list.png")
    found = rows(dom)
    assert len(found) == 9
    for state in (
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "COMPLETE",
        "EXECUTOR_ERROR",
        "SYSTEM_ERROR",
        "CANCELED",
    ):
        assert any(state in row for row in found), state
    assert "all 9" in unescape(
        re.sub(r"<[^>]+>", " ", dom.split('id="counts"', 1)[1].split("</ul>", 1)[0])
    ).replace("  ", " ")
    assert "worker-b" in dom and "<svg" in dom  # workers seen, and the chart


def test_hostile_values_are_text_not_script(server: dict[str, Any]) -> None:
    dom = browse(server["url"] + "/")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    scripts = re.findall(r"<script>(.*?)</script>", dom, re.S)
    assert len(scripts) == 1 and "alert(1)" not in scripts[0]  # only the page's own refresh script
    job = browse(
        server["url"] + "/jobs/" + requests.utils.quote(HOSTILE, safe=""), screenshot="hostile-job.png"
    )
    assert "alert(1)" not in "".join(re.findall(r"<script>(.*?)</script>", job, re.S))
    assert job.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2  # the id and the stdout line


def test_filters_and_search(server: dict[str, Any]) -> None:
    complete = rows(browse(server["url"] + "/?state=COMPLETE"))
    assert len(complete) == 2 and all("COMPLETE" in row for row in complete)
    searched = rows(browse(server["url"] + "/?q=job-fail"))
    assert len(searched) == 1 and "job-failed" in searched[0]
    by_tag = rows(browse(server["url"] + "/?q=team%3D"))
    assert len(by_tag) == 1 and "waiting" in by_tag[0]


def test_the_job_page_and_cancel(server: dict[str, Any]) -> None:
    url = server["url"]
    page = browse(f"{url}/jobs/job-failed", screenshot="job-failed.png")
    text = unescape(re.sub(r"<[^>]+>", " ", page))
    for expected in ("EXECUTOR_ERROR", "exit-code", "s3://b/out.txt", "ab" * 32, "running", "line one"):
        assert expected in text, expected
    assert "Cancel job" not in text  # finished jobs have no cancel button
    active = browse(f"{url}/jobs/{server['canceling']}")
    assert "Cancel job" in active and "confirm(" in active
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', active)
    assert csrf
    stale = requests.post(f"{url}/jobs/{server['canceling']}/cancel", data={"csrf": "0" * 64}, timeout=5)
    assert stale.status_code == 403 and _state(url, server["canceling"]) == "RUNNING"
    response = requests.post(
        f"{url}/jobs/{server['canceling']}/cancel", data={"csrf": csrf.group(1)}, timeout=5
    )
    assert (
        response.status_code == 200 and "CANCELING" in response.text
    )  # followed the redirect to the job page
    server["events"].send(event(server["canceling"], "canceled"))
    wait_until(lambda: _state(url, server["canceling"]) == "CANCELED", 30, "the canceled event")
    browse(f"{url}/jobs/{server['canceling']}", screenshot="job-canceled.png")


def test_the_table_refreshes_without_a_reload(server: dict[str, Any]) -> None:
    fragment = requests.get(server["url"] + "/fragments/jobs?state=RUNNING", timeout=5).json()
    assert "job-running" in fragment["rows"] and "fetch('/fragments/jobs'" in browse(server["url"] + "/")
    narrow = browse(server["url"] + "/", screenshot="jobs-phone.png", width=390, height=844)
    assert 'name="viewport"' in narrow


def test_the_jobs_command_against_the_server(server: dict[str, Any]) -> None:
    listed = run_cli("jobs", "--server", server["url"])
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "CREATED", "DURATION", "WORKER", "EXIT"]
    assert len(lines) == 9 and "\x1b" not in listed.stdout  # no colours when not a TTY
    column = header.index("STATE")
    states = {
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "COMPLETE",
        "EXECUTOR_ERROR",
        "SYSTEM_ERROR",
        "CANCELED",
        "CANCELING",
    }
    assert all(line[column:].split()[0] in states for line in lines)  # columns are aligned
    failed = run_cli("jobs", "--server", server["url"], "--state", "EXECUTOR_ERROR")
    assert [line.split()[0] for line in failed.stdout.splitlines()[1:]] == ["job-failed"]
    shown = run_cli("jobs", "show", "job-failed", "--server", server["url"])
    assert shown.returncode == 0 and "state:     EXECUTOR_ERROR (exit-code)" in shown.stdout
    assert "s3://b/out.txt" in shown.stdout and "running" in shown.stdout
    missing = run_cli("jobs", "show", "nope", "--server", server["url"])
    assert missing.returncode == 1 and "no job 'nope'" in missing.stderr
    unreachable = run_cli("jobs", "--server", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 69 and "Traceback" not in unreachable.stderr


def test_browsers_sign_in_when_a_token_is_required(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("browser-token-0123456789")
    port = free_port()
    process = start_cli(
        "serve",
        "--port",
        str(port),
        "--workers",
        "0",
        "--state-dir",
        str(tmp_path),
        "--auth-token-file",
        str(token_file),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/healthz"), 60, "serve")
        assert "Sign in" in browse(url + "/")
        session = requests.Session()
        refused = session.post(f"{url}/login", data={"token": "wrong"}, timeout=5)
        assert refused.status_code == 401
        signed_in = session.post(f"{url}/login", data={"token": "browser-token-0123456789"}, timeout=5)
        assert signed_in.status_code == 200 and "Jobs" in signed_in.text
        assert session.get(f"{url}/api/jobs", timeout=5).status_code == 200
        assert requests.get(f"{url}/api/jobs", timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_page_says_when_a_refresh_finds_the_store_out_of_reach(tmp_path: Path) -> None:
    """The table kept its old rows and its old time, silently, once the store stopped answering."""

    class GoesDown(SqliteTaskStore):
        reads = 0

        def page(
            self, wanted: RecordFilter, page_size: int, page_token: str | None
        ) -> tuple[list[Record], str | None]:
            self.reads += 1
            if self.reads > 1:  # the page itself read the store; its refreshes find it gone
                raise sqlite3.OperationalError("unable to open database file")
            return super().page(wanted, page_size, page_token)

    store = GoesDown(tmp_path / "tasks.db")
    served = in_process_service(tmp_path, store)
    served.extra_routes.append(status_router)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout_s=30)
        dom = browse(f"http://127.0.0.1:{port}/", after_ms=12_000)
        store.reads = 0  # the screenshot's page finds the store too, then loses it
        browse(f"http://127.0.0.1:{port}/", screenshot="jobs-not-refreshed.png", after_ms=12_000)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    stale = re.search(r'<span id="stale" class="error">([^<]*)</span>', dom)
    assert stale is not None, dom[-2000:]
    assert stale.group(1) == " Not refreshed: the task store did not answer: unable to open database file"
