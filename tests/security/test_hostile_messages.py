"""What a message may ask for: one policy for every URI and variable, and no crash on odd values."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.errors import InvalidMessage
from lanworker.message import command as messages
from lanworker.message.policy import MessagePolicy
from lanworker.pipeline.workspace import safe_relative
from tests.security.conftest import RunJob

REFUSE_LOCAL = {"allow_local_files": False}


@pytest.mark.parametrize(
    "command, path",
    [
        ({"stdin": {"type": "uri", "value": "file:///etc/passwd"}}, "$.command.stdin.value"),
        ({"stdout": {"type": "uri", "value": "/tmp/lanworker-planted.txt"}}, "$.command.stdout.value"),
        ({"stderr": {"type": "uri", "value": "file:///tmp/x"}}, "$.command.stderr.value"),
        ({"input": ["/etc/"]}, "$.command.input[0]"),
        ({"output": ["file:///tmp/o"]}, "$.command.output[0]"),
    ],
)
def test_local_files_are_refused_in_every_field(run_job: RunJob, command: dict[str, Any], path: str) -> None:
    result = run_job("cat", {"command": {"arguments": [], **command}}, **REFUSE_LOCAL)
    assert result["reason"] == "invalid-message"
    assert path in result["error"]
    assert not Path("/tmp/lanworker-planted.txt").exists()


def test_a_local_reply_to_is_refused_and_never_created(run_job: RunJob, tmp_path: Path) -> None:
    planted = tmp_path / "planted.db"
    result = run_job("true", {"reply_to": f"local:{planted}#x", "command": {"arguments": []}}, **REFUSE_LOCAL)
    assert result["reason"] == "invalid-message" and "$.reply_to" in result["error"]
    assert not planted.exists()


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"internal data"
            if self.path == "/slow":
                self.send_response(200)
                self.send_header("Content-Length", str(10**9))
                self.end_headers()
                for _ in range(600):
                    try:
                        self.wfile.write(b"x" * 10)
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.1)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"{server.server_address[1]}"
    server.shutdown()


def input_job(url: str) -> dict[str, Any]:
    return {"command": {"arguments": [{"type": "input", "value": url}]}}


def test_private_http_inputs_are_refused(run_job: RunJob, http_server: str) -> None:
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254"):
        result = run_job("cat", input_job(f"http://{host}:{http_server}/x"), **REFUSE_LOCAL)
        assert result["reason"] == "invalid-message", (host, result)
    # A name that only resolves to a private address is refused when it is connected to.
    name = socket.gethostname()
    result = run_job("cat", input_job(f"http://{name}:{http_server}/x"), **REFUSE_LOCAL)
    assert result["reason"] == "invalid-message" and "non-public address" in result["error"], result


def test_private_http_inputs_work_when_the_operator_allows_them(run_job: RunJob, http_server: str) -> None:
    result = run_job(
        'cat "$1"', input_job(f"http://127.0.0.1:{http_server}/x"), allow_private_http=True, **REFUSE_LOCAL
    )
    assert result["state"] == "succeeded" and result["inputs"][0]["size"] == len(b"internal data")


def test_the_job_timeout_covers_staging(run_job: RunJob, http_server: str) -> None:
    job = {"timeout_s": 2, **input_job(f"http://127.0.0.1:{http_server}/slow")}
    started = time.monotonic()
    result = run_job("cat", job, allow_private_http=True)
    assert (result["state"], result["reason"]) == ("failed", "timeout")
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "PATH", "PYTHONPATH", "LANWORKER_QUEUE", "ld_library_path", "BASH_ENV"]
)
def test_dangerous_environment_names_are_refused(run_job: RunJob, name: str) -> None:
    result = run_job("true", {"env": {name: "in/evil.so"}, "command": {"arguments": []}})
    assert result["reason"] == "invalid-message" and f"$.env.{name}" in result["error"]


def test_the_operator_may_allow_an_environment_name(run_job: RunJob) -> None:
    result = run_job(
        'echo "$PYTHONPATH"',
        {"env": {"PYTHONPATH": "/opt/x"}, "command": {"arguments": [], "stdout": {"type": "pipe"}}},
        allow_env=("PYTHON*",),
    )
    assert result["state"] == "succeeded" and result["stdout"]["text"] == "/opt/x\n"


@pytest.mark.parametrize(
    "body, fragment",
    [
        ('{"service": "s", "resources": {"cpus": NaN}, "command": {}}', "NaN"),
        ('{"service": "s", "retry": {"attempts": 2, "delay_s": NaN}, "command": {}}', "NaN"),
        ('{"service": "s", "resources": {"cpus": 1e999}, "command": {}}', "out of range"),
        ('{"service": "s", "env": {"A": "x\\u0000y"}, "command": {}}', "NUL"),
        ('{"service": "s", "command": {"arguments": [{"type": "parameter", "value": "a\\u0000"}]}}', "NUL"),
        ('{"service": "s\\ud800", "command": {}}', "surrogate"),
        ('{"service": "s", "id": "job\\n", "command": {}}', "$.id"),
        ('{"service": "s", "env": {"NAME\\n": "x"}, "command": {}}', "$.env"),
        (
            '{"service": "s", "command": {"arguments": [{"type": "input", "value": "s3://b/'
            + "k" * 300
            + '"}]}}',
            "too long",
        ),
        ('{"service": "s", "command": {"x": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}}", "nested deeper"),
    ],
)
def test_values_that_would_crash_a_job_are_invalid_at_once(run_job: RunJob, body: str, fragment: str) -> None:
    with pytest.raises(InvalidMessage) as refused:
        message = messages.parse(body)
        assert isinstance(message.work, messages.Command)
        for argument in message.work.arguments:
            if argument.value and argument.value.startswith("s3://"):
                safe_relative(argument.value[5:], "t")
    assert fragment in str(refused.value)
    result = run_job("true", body)
    assert (result["state"], result["reason"]) == ("failed", "invalid-message")
    assert fragment in result["error"]
    [letter] = run_job.queue.list_dead_letters(10)  # type: ignore[attr-defined]
    assert letter.receive_count == 1 and "received" not in letter.reason  # at once, reason kept


def test_policy_names_every_refusal() -> None:
    message = messages.from_document(
        {
            "service": "s",
            "reply_to": "local:/tmp/x.db",
            "env": {"LD_PRELOAD": "x", "OK": "y"},
            "command": {"arguments": [{"type": "input", "value": "http://10.0.0.1/x"}]},
        }
    )
    problems = MessagePolicy(allow_local_files=False).problems(message)
    assert [p.split(":")[0] for p in problems] == [
        "$.command.arguments[0].value",
        "$.reply_to",
        "$.env.LD_PRELOAD",
    ]
    assert (
        MessagePolicy(allow_local_files=True, allow_private_http=True, allow_env=("LD_*",)).problems(message)
        == []
    )
    assert json.dumps(problems)


def test_a_worker_with_local_file_roots_refuses_paths_beyond_them(run_job: RunJob, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("ok")
    (data / "link").symlink_to("/etc")
    for uri in ("/etc/hostname", f"file://{data}/link/hostname", f"{tmp_path}/elsewhere.txt"):
        argument = {"type": "input", "name": "--in", "value": uri}
        result = run_job("cat $2", {"command": {"arguments": [argument]}}, local_file_roots=(str(data),))
        assert (result["state"], result["reason"]) == ("failed", "invalid-message"), (uri, result)
        assert "outside the directories" in result["error"]
    argument = {"type": "input", "name": "--in", "value": f"file://{data}/in.txt"}
    result = run_job("cat $2", {"command": {"arguments": [argument]}}, local_file_roots=(str(data),))
    assert result["state"] == "succeeded", result
