"""`worker.py serve` attacked as a web page, a TES client and a stranger would (issue 18).

Each test reproduces one attack against a real serve process on loopback: host files
through file:// URLs, cross-site form posts and DNS rebinding, framing, endless chunked
bodies, forged page tokens and a store filled without end.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from lanworker.core import exitcodes
from tests.helpers.browser import chromium
from tests.helpers.moto import free_port
from tests.helpers.processes import answers, run_cli, start_cli, wait_until

API = "/ga4gh/tes/v1"
TOKEN = "front-door-token-0123456789"


@dataclass
class Serve:
    url: str
    port: int
    pid: int
    state: Path

    def tasks(self, **headers: str) -> list[dict[str, Any]]:
        response = requests.get(f"{self.url}{API}/tasks", headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        return list(response.json()["tasks"])


def _start(state: Path, *flags: str) -> Iterator[Serve]:
    port = free_port()
    process = start_cli(
        "serve", "--port", str(port), "--workers", "0", "--state-dir", str(state), "--log-format", "json",
        *flags, log_path=state / "serve.log",
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    try:
        wait_until(lambda: answers(f"{url}/healthz"), 60, "serve to answer")
        yield Serve(url, port, process.pid, state)
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    yield from _start(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def token_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    state = tmp_path_factory.mktemp("token-serve")
    (state / "token").write_text(TOKEN)
    yield from _start(state, "--auth-token-file", str(state / "token"))


def task(**extra: Any) -> dict[str, Any]:
    return {"name": "t", "executors": [{"image": "lanworker-test/busybox:1", "command": ["true"]}], **extra}


# ------------------------------------------------------------------------------ host files
HOSTILE_TASKS = {
    "read /etc/shadow": task(inputs=[{"url": "file:///etc/shadow", "path": "/in/shadow"}]),
    "write a host file": task(outputs=[{"url": "file:///tmp/pwned", "path": "/out/x"}]),
    "plain path": task(inputs=[{"url": "/etc/shadow", "path": "/in/shadow"}]),
    "authorized_keys": task(
        inputs=[{"content": "ssh-ed25519 AAAA attacker", "path": "/in/k"}],
        outputs=[{"url": "file:///root/.ssh/authorized_keys", "path": "/in/k"}],
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TASKS))
def test_file_urls_are_refused_by_default(serve: Serve, token_serve: Serve, name: str) -> None:
    refused = requests.post(f"{serve.url}{API}/tasks", json=HOSTILE_TASKS[name], timeout=10)
    assert refused.status_code == 400, refused.text
    assert "file://" not in refused.json()["msg"].split("supported:")[-1]
    with_token = requests.post(
        f"{token_serve.url}{API}/tasks",
        json=HOSTILE_TASKS[name],
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert with_token.status_code == 400, with_token.text
    assert not Path("/tmp/pwned").exists()


def test_service_info_lists_no_local_storage_by_default(serve: Serve) -> None:
    storage = requests.get(f"{serve.url}{API}/service-info", timeout=10).json()["storage"]
    assert storage and not any(s.startswith("file:") for s in storage)


def test_local_files_only_beneath_the_directories_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("mine")
    (data / "escape").symlink_to("/etc")
    state = tmp_path / "state"
    state.mkdir()
    for started in _start(state, "--allow-local-files", str(data)):
        url = f"{started.url}{API}/tasks"

        def post(body: dict[str, Any], url: str = url) -> requests.Response:
            return requests.post(url, json=body, timeout=10)

        inside = post(task(inputs=[{"url": f"file://{data}/in.txt", "path": "/in/a"}]))
        assert inside.status_code == 200, inside.text
        for url in ("file:///etc/passwd", f"file://{data}/escape/passwd", f"{data}-other/x"):
            refused = post(task(inputs=[{"url": url, "path": "/in/a"}]))
            assert refused.status_code == 400 and "outside" in refused.json()["msg"], (url, refused.text)
        out = post(task(outputs=[{"url": "file:///tmp/pwned", "path": "/o/x"}]))
        assert out.status_code == 400
        storage = requests.get(f"{started.url}{API}/service-info", timeout=10).json()["storage"]
        assert [s for s in storage if s.startswith("file:")] == [f"file://{data}/"]


def test_serve_needs_a_directory_to_allow_local_files(tmp_path: Path) -> None:
    done = run_cli(
        "serve", "--workers", "0", "--state-dir", str(tmp_path), "--allow-local-files", timeout_s=60
    )
    assert done.returncode == exitcodes.EXIT_CONFIG, done.stderr
    assert "needs a directory" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------------ cross-site requests
FOREIGN = "http://evil.example"


def _created(serve: Serve, before: int) -> int:
    return len(serve.tasks()) - before


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Content-Type": "text/plain"}, 415),  # an HTML form with enctype=text/plain
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "multipart/form-data; boundary=x"}, 415),
        ({"Content-Type": "text/plain", "Origin": FOREIGN}, 403),
        ({"Content-Type": "application/json", "Origin": FOREIGN}, 403),
        ({"Content-Type": "application/json", "Origin": "null"}, 403),  # a sandboxed frame
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
    ],
)
def test_cross_site_task_posts_are_refused(serve: Serve, headers: dict[str, str], status: int) -> None:
    before = len(serve.tasks())
    response = requests.post(f"{serve.url}{API}/tasks", data=json.dumps(task()), headers=headers, timeout=10)
    assert response.status_code == status, response.text
    assert _created(serve, before) == 0


def test_the_servers_own_origin_may_post(serve: Serve) -> None:
    response = requests.post(
        f"{serve.url}{API}/tasks", json=task(), headers={"Origin": serve.url}, timeout=10
    )
    assert response.status_code == 200, response.text


def test_cross_site_cancel_is_refused(serve: Serve) -> None:
    task_id = requests.post(f"{serve.url}{API}/tasks", json=task(), timeout=10).json()["id"]
    for headers in (
        {"Origin": FOREIGN},
        {"Content-Type": "text/plain", "Origin": FOREIGN},
        {"Content-Type": "text/plain"},
    ):
        refused = requests.post(f"{serve.url}{API}/tasks/{task_id}:cancel", headers=headers, timeout=10)
        assert refused.status_code in (403, 415), refused.text
    state = requests.get(f"{serve.url}{API}/tasks/{task_id}", timeout=10).json()["state"]
    assert state == "QUEUED"
    assert requests.post(f"{serve.url}{API}/tasks/{task_id}:cancel", timeout=10).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "10.0.0.1:{port}", ""])
def test_dns_rebinding_host_names_are_refused_on_loopback(serve: Serve, host: str) -> None:
    paths = (
        ("GET", f"{API}/tasks"),
        ("GET", f"{API}/tasks/any-task"),
        ("GET", "/"),
        ("POST", f"{API}/tasks"),
    )
    for method, path in paths:
        response = requests.request(
            method,
            f"{serve.url}{path}",
            headers={"Host": host.format(port=serve.port)},
            json=task(),
            timeout=10,
        )
        assert response.status_code == 403, (method, path, response.text)
    assert requests.get(f"http://localhost:{serve.port}{API}/tasks", timeout=10).status_code == 200


def test_the_sign_in_cookie_opens_the_status_view_but_not_the_api(token_serve: Serve) -> None:
    session = requests.Session()
    signed_in = session.post(f"{token_serve.url}/login", data={"token": TOKEN}, timeout=10)
    assert signed_in.status_code == 200
    assert session.get(f"{token_serve.url}/api/jobs", timeout=10).status_code == 200
    assert session.get(f"{token_serve.url}/", timeout=10).status_code == 200
    assert session.get(f"{token_serve.url}{API}/tasks", timeout=10).status_code == 401
    posted = session.post(f"{token_serve.url}{API}/tasks", json=task(), timeout=10)
    assert posted.status_code == 401
    forged = requests.get(
        f"{token_serve.url}{API}/tasks", headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"}, timeout=10
    )
    assert forged.status_code == 401


def test_the_polled_and_submit_routes_take_only_the_right_token(token_serve: Serve) -> None:
    """GET /tasks/ID and POST /tasks are plain routes (no FastAPI dependencies): the token
    check in front of them still refuses a forged token, a missing one and the cookie."""
    right = {"Authorization": f"Bearer {TOKEN}"}
    created = requests.post(f"{token_serve.url}{API}/tasks", json=task(), headers=right, timeout=10)
    assert created.status_code == 200, created.text
    task_url = f"{token_serve.url}{API}/tasks/{created.json()['id']}"
    assert requests.get(task_url, headers=right, timeout=10).json()["state"] == "QUEUED"
    before = len(token_serve.tasks(**right))
    for headers in (
        {"Authorization": "Bearer " + TOKEN[:-1] + "x"},
        {"Authorization": "Bearer"},
        {"Authorization": TOKEN},
        {},
        {"Cookie": f"lanworker_token={TOKEN}"},
    ):
        assert requests.get(task_url, headers=headers, timeout=10).status_code == 401, headers
        posted = requests.post(f"{token_serve.url}{API}/tasks", json=task(), headers=headers, timeout=10)
        assert posted.status_code == 401, headers
    assert len(token_serve.tasks(**right)) == before


class _AttackerPage(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        page = (
            "<!doctype html><html><body>"
            f'<form id=f method=post action="{self.target}" enctype="text/plain">'
            '<input name=\'{"name":"drive-by","executors":[{"image":"x","command":["true"]}],"x":"\' value=\'"}\'>'
            "</form><iframe id=frame></iframe><script>document.getElementById('f').submit();</script></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_drive_by_form_in_a_real_browser_creates_no_task(serve: Serve) -> None:
    browser = chromium()
    _AttackerPage.target = f"{serve.url}{API}/tasks"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        before = [t for t in serve.tasks() if t.get("name") == "drive-by"]
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
             "--dump-dom", f"http://127.0.0.1:{attacker.server_address[1]}/"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        after = requests.get(f"{serve.url}{API}/tasks?view=BASIC", timeout=10).json()["tasks"]
        assert [t for t in after if t.get("name") == "drive-by"] == before == []
    finally:
        attacker.shutdown()


# ------------------------------------------------------------------------------- framing
def test_pages_forbid_framing_and_foreign_scripts(serve: Serve) -> None:
    for path in ("/", "/login", "/jobs/none"):
        response = requests.get(f"{serve.url}{path}", timeout=10)
        assert response.headers["X-Frame-Options"] == "DENY", path
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy
        assert "unsafe-inline" not in policy and "'sha256-" in policy
        assert 'style="' not in response.text  # inline attributes would need unsafe-inline
    api = requests.get(f"{serve.url}{API}/tasks", timeout=10)
    assert api.headers["X-Frame-Options"] == "DENY" and api.headers["X-Content-Type-Options"] == "nosniff"


# -------------------------------------------------------------------- bounded request work
def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _chunked(serve: Serve, path: str, total_bytes: int, content_type: str) -> int | None:
    """POST total_bytes as a chunked body with no Content-Length; the status, or None when
    the server closed the connection without an answer."""
    connection = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=30)
    connection.putrequest("POST", path)
    connection.putheader("Transfer-Encoding", "chunked")
    connection.putheader("Content-Type", content_type)
    connection.endheaders()
    chunk = b"a" * (1024 * 1024)
    try:
        for _ in range(total_bytes // len(chunk)):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
    except OSError:
        pass  # the server stopped reading: what it answered is still there to read
    try:
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("path", "total_mb", "content_type"),
    [
        ("/login", 200, "application/x-www-form-urlencoded"),
        (f"{API}/tasks", 200, "application/json"),
        ("/jobs/x/cancel", 50, "application/x-www-form-urlencoded"),
        (f"{API}/tasks/x:cancel", 50, "application/json"),
        ("/nowhere", 50, "application/json"),
    ],
)
def test_chunked_bodies_stop_at_the_limit(serve: Serve, path: str, total_mb: int, content_type: str) -> None:
    before = _rss_kb(serve.pid)
    status = _chunked(serve, path, total_mb * 1024 * 1024, content_type)
    assert status in (413, None), status
    grown_mb = (_rss_kb(serve.pid) - before) / 1024
    assert grown_mb < 60, f"serve grew by {grown_mb:.0f} MB reading a body it refuses"
    assert requests.get(f"{serve.url}/healthz", timeout=10).status_code == 200


def test_a_large_declared_body_is_refused_before_it_is_read(serve: Serve) -> None:
    response = requests.post(
        f"{serve.url}/login", data=b"t" * 10_000, headers={"Content-Type": "text/plain"}, timeout=10
    )
    assert response.status_code == 413


# ------------------------------------------------------------------------------ page tokens
FORGED_TOKENS = [
    "1" * 401,
    "WzEkJCQ",
    "WyIxZTQwMCIsICJ4Il0",  # ["1e400", "x"]
    "W251bGwsIG51bGxd",  # [null, null]
    "eyJhIjogMX0",  # {"a": 1}
    "WzEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLCAieCJd",
]


@pytest.mark.parametrize("token", FORGED_TOKENS)
@pytest.mark.parametrize("path", [f"{API}/tasks", "/", "/api/jobs", "/fragments/jobs"])
def test_every_forged_page_token_is_a_400(serve: Serve, path: str, token: str) -> None:
    response = requests.get(f"{serve.url}{path}", params={"page_token": token}, timeout=10)
    assert response.status_code == 400, (path, token[:20], response.status_code, response.text[:200])


# ------------------------------------------------------------------------------ store growth
def test_the_store_stops_growing_at_max_store_mb(tmp_path: Path) -> None:
    content = "x" * 100_000
    for started in _start(tmp_path, "--max-store-mb", "2"):
        statuses = []
        for _ in range(40):
            body = task(inputs=[{"content": content, "path": "/in/a"}])
            response = requests.post(f"{started.url}{API}/tasks", json=body, timeout=10)
            statuses.append(response.status_code)
            if response.status_code == 507:
                assert "--max-store-mb" in response.json()["msg"]
                break
        assert statuses[-1] == 507 and statuses.count(200) >= 3, statuses
        assert statuses.count(200) * len(content) <= 2 * 2**20, statuses  # no more than the cap took
        small = requests.post(f"{started.url}{API}/tasks", json=task(), timeout=10)
        assert small.status_code in (200, 507)


def test_docs_say_how_old_tasks_are_pruned() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "--keep-days" in readme and "--max-store-mb" in readme
