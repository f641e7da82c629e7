"""Defects found by trying the CLI as a new user would: each exits with its documented code."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from lanworker.core import exitcodes
from lanworker.queues import LocalQueue
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import cli_env, run_cli, start_cli, wait_until

TOOL = str(Path(__file__).resolve().parents[1] / "helpers" / "tool.py")


@pytest.fixture
def local(tmp_path: Path) -> LocalQueue:
    return LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")


def job(**extra: object) -> str:
    return json.dumps({"service": "tool", "command": {"arguments": []}, **extra})


@pytest.mark.parametrize(
    "command", [["[no-such-program,", "my_script.py]"], ['["python3", "x.py"]'], ["--", "/nonexistent/tool"]]
)
def test_a_worker_whose_program_cannot_run_exits_78_before_receiving(
    local: LocalQueue, tmp_path: Path, command: list[str]
) -> None:
    local.send(job())
    completed = run_cli(
        "native", "--queue", local.url, "--work-root", str(tmp_path / "w"), "--once", *command
    )
    if command[0] == '["python3", "x.py"]':
        # python3 exists: the JSON form is read, the worker runs, the script is the job's problem.
        assert completed.returncode == exitcodes.EXIT_OK, completed.stderr
        return
    assert completed.returncode == exitcodes.EXIT_CONFIG, completed.stderr
    assert "configuration error" in completed.stderr
    [message] = local.receive(1, 0, 30)
    assert message.receive_count == 1  # nobody took it before


def test_the_seed_readme_command_line_runs_jobs(local: LocalQueue, tmp_path: Path) -> None:
    local.send(job(command={"arguments": [{"type": "parameter", "name": "--arg1", "value": "seed"}]}))
    results = local.sibling("results")
    completed = run_cli(
        "native",
        "--queue",
        local.url,
        "--results",
        results.url,
        "--work-root",
        str(tmp_path / "w"),
        "--once",
        "[python3,",
        f"{TOOL}]",
    )
    assert completed.returncode == exitcodes.EXIT_OK, completed.stderr
    [reply] = results.receive(1, 0, 30)
    result = json.loads(reply.body)
    assert result["state"] == "succeeded" and "arg1=seed" in result["stdout"]["text"]


def test_sigterm_in_once_mode_with_free_slots_releases_within_the_grace_period(
    local: LocalQueue, tmp_path: Path
) -> None:
    local.send(job(command={"arguments": [{"type": "parameter", "name": "--sleep", "value": 30}]}))
    worker = start_cli(
        "native",
        "--queue",
        local.url,
        "--work-root",
        str(tmp_path / "w"),
        "--once",
        "--concurrency",
        "2",
        "--grace-period-s",
        "1",
        "--log-format",
        "json",
        "--",
        "python3",
        TOOL,
        log_path=tmp_path / "worker.log",
    )
    wait_until(lambda: local.counts()["in_flight"] == 1, 20, "the job to start")
    time.sleep(0.5)
    began = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == exitcodes.EXIT_STOPPED
    assert time.monotonic() - began < 10  # about the 1 s grace period, not the job's 30 s
    assert local.counts() == {"visible": 1, "in_flight": 0, "dead_letters": 0}


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\xff\xfe not utf-8", "not UTF-8"),
        (b"[" * 1000 + b"]" * 1000, "nested"),
        (
            json.dumps({"service": "s", "command": {"arguments": [{"type": "parameter", "value": 1}]}})
            .encode()
            .replace(b"1}", b"1" * 5000 + b"}"),
            "4300 digits",
        ),
        (b'{"service": "s", "command": {"x": ' + b'{"a": ' * 900 + b"1" + b"}" * 900 + b"}}", "nested"),
        (
            b'{"service": "s", "command": {"arguments": [], "stdin": {"type": "pipe", "value": "\\ud800"}}}',
            "surrogate",
        ),
    ],
)
def test_validate_and_submit_report_unusable_files_without_a_traceback(
    local: LocalQueue, tmp_path: Path, content: bytes, fragment: str
) -> None:
    path = tmp_path / "message.json"
    path.write_bytes(content)
    completed = run_cli("validate", str(path))
    assert completed.returncode == exitcodes.EXIT_FAILED, completed.stderr
    assert fragment in completed.stdout and "Traceback" not in completed.stderr
    completed = run_cli("submit", "--queue", local.url, str(path))
    assert completed.returncode == exitcodes.EXIT_FAILED
    assert fragment in completed.stderr and "Traceback" not in completed.stderr
    assert local.counts()["visible"] == 0


def test_submit_of_a_missing_file_is_a_usage_error(local: LocalQueue, tmp_path: Path) -> None:
    completed = run_cli("submit", "--queue", local.url, str(tmp_path / "nope.json"))
    assert completed.returncode == exitcodes.EXIT_USAGE
    assert "cannot read" in completed.stderr and "Traceback" not in completed.stderr
    completed = run_cli("validate", str(tmp_path / "nope.json"))
    assert completed.returncode == exitcodes.EXIT_USAGE and "cannot read" in completed.stderr  # as for submit


def test_text_logs_escape_control_characters(local: LocalQueue, tmp_path: Path) -> None:
    hostile_id = "x\x1b[31mRED\nFAKE 2026-01-01 00:00:00 INFO forged line"
    local.send(json.dumps({"id": hostile_id, "service": "s"}))  # invalid: no command
    completed = run_cli(
        "native",
        "--queue",
        local.url,
        "--work-root",
        str(tmp_path / "w"),
        "--once",
        "--log-format",
        "text",
        "--",
        "true",
    )
    assert completed.returncode == exitcodes.EXIT_OK
    assert "\x1b" not in completed.stderr
    assert not any(line.startswith("FAKE") for line in completed.stderr.splitlines())
    assert re.search(r"\\x1b\[31mRED\\nFAKE", completed.stderr)


def test_translate_dry_run_says_why_and_reads_on_after_a_bad_file(tmp_path: Path) -> None:
    removed = tmp_path / "removed.json"
    removed.write_text(
        json.dumps(
            {
                "Records": [
                    {
                        "eventVersion": "2.1",
                        "eventName": "ObjectRemoved:Delete",
                        "s3": {"bucket": {"name": "gen3-upload"}, "object": {"key": "x/y.bam"}},
                    }
                ]
            }
        )
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": "b"}}]}))
    lambda_batch = tmp_path / "lambda.json"
    lambda_batch.write_text(json.dumps({"Records": [{"messageId": "1", "body": "{}"}]}))
    completed = run_cli(
        "translate",
        "--dry-run",
        "--rules",
        "examples/rules/gen3.yaml",
        str(bad),
        str(lambda_batch),
        str(removed),
    )
    assert completed.returncode == exitcodes.EXIT_FAILED
    assert "Traceback" not in completed.stderr
    assert f"{bad}: Records[0].s3.bucket must be an object" in completed.stderr
    assert f"{lambda_batch}: Records[0] is a Lambda batch record" in completed.stderr
    assert (
        f"{removed}: record 0 (ObjectRemoved:Delete s3://gen3-upload/x/y.bam): no rule fires on"
        in completed.stderr
    )


def test_submit_of_a_message_the_queue_refuses_is_a_clear_error(moto_server, queue_factory, tmp_path) -> None:
    url = queue_factory(attributes={"MaximumMessageSize": "1024"})
    path = tmp_path / "message.json"
    path.write_text(job(env={"PAD": "x" * 2000}))
    completed = run_cli("submit", "--queue", url, str(path), env=cli_env(**moto_server.environment()))
    assert completed.returncode == exitcodes.EXIT_FAILED, completed.stderr
    assert "refused the message" in completed.stderr and "Traceback" not in completed.stderr


def test_credentials_the_queue_refuses_are_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    """A moto_server of its own that checks every request's credentials, as SQS does."""
    server = MotoServer(free_port(), tmp_path / "moto.log")
    server.start()
    try:
        env = cli_env(**server.environment())
        sqs = boto3.client(
            "sqs",
            endpoint_url=server.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        url = sqs.create_queue(QueueName="guarded")["QueueUrl"]
        enforce = urllib.request.Request(
            f"{server.endpoint}/moto-api/reset-auth", data=b"0", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(enforce, timeout=10).close()  # from now on every request is checked
        env.update(AWS_ACCESS_KEY_ID="AKIAIOSFODNN7EXAMPLE", AWS_SECRET_ACCESS_KEY="not-the-secret")
        message = tmp_path / "message.json"
        message.write_text(job())
        work = str(tmp_path / "w")
        for argv in (
            ["submit", "--queue", url, str(message)],
            ["native", "--queue", url, "--once", "--wait-time-s", "0", "--work-root", work, "--", "true"],
        ):
            completed = run_cli(*argv, env=env)
            assert completed.returncode == exitcodes.EXIT_QUEUE_UNREACHABLE, completed.stderr
            assert "access denied (InvalidClientTokenId)" in completed.stderr
            assert "Traceback" not in completed.stderr
    finally:
        server.stop()


def test_cancel_says_why_it_cannot_leave_its_marker(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    completed = run_cli("cancel", "--control", str(blocked / "control"), "job-1")
    assert completed.returncode == exitcodes.EXIT_CONFIG, completed.stderr
    assert "cannot write the cancel marker" in completed.stderr and "Traceback" not in completed.stderr
    completed = run_cli("cancel", "--control", "ftp://host/control", "job-1")
    assert completed.returncode == exitcodes.EXIT_CONFIG and "control_url" in completed.stderr
    completed = run_cli("cancel", "--control", str(tmp_path / "control"), "job-1")
    assert completed.returncode == exitcodes.EXIT_OK, completed.stderr
    assert (tmp_path / "control" / "cancel" / "job-1").exists()


def test_a_busy_port_or_an_unusable_work_root_is_a_config_error(tmp_path: Path) -> None:
    import socket

    queue = f"local:{tmp_path / 'q.db'}"
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        metrics = run_cli("native", "--queue", queue, "--metrics-port", port, "--once", "--", "true")
        serve = run_cli("serve", "--port", port, "--workers", "0", "--state-dir", str(tmp_path / "serve"))
    assert metrics.returncode == exitcodes.EXIT_CONFIG, metrics.stderr
    assert f"metrics port {port}: Address already in use" in metrics.stderr
    assert serve.returncode == exitcodes.EXIT_CONFIG, serve.stderr  # it was 0
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in serve.stderr
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    completed = run_cli("native", "--queue", queue, "--work-root", str(blocked / "w"), "--once", "--", "true")
    assert completed.returncode == exitcodes.EXIT_CONFIG, completed.stderr
    assert "work root" in completed.stderr and "Traceback" not in completed.stderr


def test_dead_letters_of_a_queue_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    completed = run_cli("dead-letters", "--queue", f"local:{tmp_path / 'typo.db'}")
    assert completed.returncode == exitcodes.EXIT_QUEUE_UNREACHABLE
    assert "no local queue at" in completed.stderr and not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["jobs", "--limit", "-1"], "--limit: -1 is not between 1 and 1000"),
        (["jobs", "--interval-s", "0", "--watch"], "--interval-s: 0 is not at least 0.1"),
        (["jobs", "--state", "BOGUS", "--store", "sqlite:/dev/null"], "one of QUEUED, INITIALIZING"),
        (["jobs", "show"], "usage: worker.py jobs"),
        (["jobs", "list", "all"], "usage: worker.py jobs"),
        (["serve", "--port", "70000"], "--port: 70000 is not between 0 and 65535"),
        (["serve", "--workers", "-1"], "--workers: -1 is not at least 0"),
        (["dead-letters", "--limit", "0"], "--limit: 0 is not at least 1"),
        (["translate", "--dry-run", "--rules", "examples/rules/gen3.yaml"], "needs event files"),
    ],
)
def test_out_of_range_arguments_are_usage_errors(argv: list[str], fragment: str) -> None:
    completed = run_cli(*argv)  # --limit -1 was an IndexError traceback; the others ran
    assert completed.returncode == exitcodes.EXIT_USAGE, completed.stderr
    assert fragment in completed.stderr and "Traceback" not in completed.stderr


def test_jobs_from_a_store_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    completed = run_cli("jobs", "--store", f"sqlite:{tmp_path / 'typo.db'}")
    assert completed.returncode == exitcodes.EXIT_QUEUE_UNREACHABLE
    assert "no task store at" in completed.stderr and not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(
    ("status", "body", "code", "said"),
    [
        (
            503,
            b'{"msg": "the task store did not answer: disk I/O error", "status_code": 503}',
            69,
            "answered 503",
        ),
        (403, b"<h1>Host not allowed</h1>", 78, "refused the request (403): <h1>Host not allowed</h1>"),
    ],
)
def test_jobs_against_a_server_that_cannot_answer_says_why(
    status: int, body: bytes, code: int, said: str
) -> None:
    """A 503 (its task store out of reach) was a requests.HTTPError traceback and exit 70."""

    class Refusing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        completed = run_cli("jobs", "--server", f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert completed.returncode == code and said in completed.stderr and "Traceback" not in completed.stderr
    if status == 503:
        assert "the task store did not answer: disk I/O error" in completed.stderr


def test_jobs_with_no_server_listening_says_what_to_do() -> None:
    """It printed urllib3's whole chain of wrapped exceptions, under "queue unreachable"."""
    completed = run_cli("jobs", "--server", f"http://127.0.0.1:{free_port()}")
    assert completed.returncode == exitcodes.EXIT_QUEUE_UNREACHABLE
    first = completed.stderr.strip().splitlines()[-1]
    assert "(connection refused)" in first and "worker.py serve" in first and "--store" in first
    assert "HTTPConnectionPool" not in completed.stderr and "Traceback" not in completed.stderr
