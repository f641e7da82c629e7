"""What a new user meets, following the README literally (issue 21): each test failed before."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from lanworker.core import exitcodes
from lanworker.message.command import job_id_of
from lanworker.queues import LocalQueue
from lanworker.queues.receive import ReceiveLoop, ReceivePlan
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import cli_env, run_cli


@pytest.fixture
def local(tmp_path: Path) -> LocalQueue:
    return LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")


def test_validate_of_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"service": "s", "command": {"arguments": []}}))
    done = run_cli("validate", str(good), str(tmp_path / "missing.json"))
    assert done.returncode == exitcodes.EXIT_USAGE, (done.stdout, done.stderr)
    assert "cannot read" in done.stderr and f"{good}: ok" in done.stdout


def test_a_refused_message_keeps_the_fields_that_could_be_read(tmp_path: Path, worker_factory) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")
    queue.send(json.dumps({"id": "refused", "service": "my_service", "command": {"arguments": 7}}))
    worker_factory(queue_url=queue.url, results_url=results.url).run()
    [result] = [json.loads(m.body) for m in results.receive(10, 0, 30)]
    assert (result["reason"], result["service"], result["job_id"]) == (
        "invalid-message",
        "my_service",
        "refused",
    )


def test_log_lines_name_the_job_once(local: LocalQueue, tmp_path: Path) -> None:
    local.send(
        json.dumps(
            {
                "id": "once-only",
                "service": "s",
                "command": {"arguments": [{"type": "parameter", "value": "1"}]},
            }
        )
    )
    done = run_cli(
        "native", "--queue", local.url, "--work-root", str(tmp_path / "w"), "--once", "--log-format", "text",
        "--", "sh", "-c", "exit 3",
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if "once-only" in line]
    assert lines, done.stderr
    assert all(line.count("once-only") == 1 for line in lines), "\n".join(lines)


def test_listening_is_logged_only_once_listening(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    done = run_cli(
        "native",
        "--queue",
        f"local:{tmp_path / 'q.db'}",
        "--work-root",
        str(blocked / "w"),
        "--once",
        "--",
        "true",
    )
    assert done.returncode == exitcodes.EXIT_CONFIG
    assert "listening on" not in done.stderr, done.stderr


class _RecordingQueue(LocalQueue):
    waits: list[float]

    def receive(self, max_messages: int, wait_time_s: float, visibility_timeout_s: int) -> list[Any]:
        self.waits.append(wait_time_s)
        return super().receive(max_messages, wait_time_s, visibility_timeout_s)


def test_once_on_the_embedded_queue_ends_as_soon_as_it_is_empty(tmp_path: Path) -> None:
    queue = _RecordingQueue(f"local:{tmp_path / 'q.db'}#jobs")
    queue.waits = []
    loop = ReceiveLoop(queue, lambda messages: None, ReceivePlan(1, 20, 30, once=True), threading.Event())
    loop.run(1.0, threading.Event(), lambda: None)
    assert queue.waits == [0]  # one look, no long poll


def test_client_commands_against_a_dead_endpoint_fail_in_one_line(tmp_path: Path) -> None:
    message = tmp_path / "m.json"
    message.write_text(json.dumps({"service": "s", "command": {"arguments": []}}))
    queue = f"http://127.0.0.1:{free_port()}/123456789012/nobody-listens"
    env = cli_env(AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="y", AWS_DEFAULT_REGION="us-east-1")
    for argv in (["submit", "--queue", queue, str(message)], ["dead-letters", "--queue", queue]):
        done = run_cli(*argv, env=env, timeout_s=15)  # it retried for 60 s, then printed 127 lines
        assert done.returncode == exitcodes.EXIT_QUEUE_UNREACHABLE, (argv, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_dead_letters_show_the_job_id_submit_printed_and_keep_it_across_a_redrive(
    local: LocalQueue, tmp_path: Path
) -> None:
    message = tmp_path / "m.json"
    message.write_text(json.dumps({"service": "s", "command": {"arguments": []}}))
    submitted = run_cli("submit", "--queue", local.url, str(message))
    job_id = submitted.stdout.strip()
    [received] = local.receive(1, 0, 30)
    local.dead_letter(received, "a test put it here")
    listed = run_cli("dead-letters", "--queue", local.url)
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["job_id"] == job_id, entry
    run_cli("dead-letters", "--queue", local.url, "--redrive")
    [again] = local.receive(1, 0, 30)
    assert job_id_of(again.body, again.message_id) == job_id


def test_dead_letters_without_a_dead_letter_queue_say_so(moto_server: MotoServer, queue_factory) -> None:
    done = run_cli("dead-letters", "--queue", queue_factory(), env=cli_env(**moto_server.environment()))
    assert done.returncode == exitcodes.EXIT_CONFIG, done.stderr
    assert "no dead-letter queue" in done.stderr and "unreachable" not in done.stderr


@pytest.mark.parametrize(
    "form",
    [
        ["[python3, my_script.py]"],
        ['["python3", "my_script.py"]'],
        ["[python3,", "my_script.py]"],
        ["--", "python3", "my_script.py"],
    ],
)
def test_the_seed_command_runs_a_script_beside_the_launch_directory(tmp_path: Path, form: list[str]) -> None:
    import subprocess
    import sys

    from tests.helpers.processes import WORKER_PY

    launch = tmp_path / "launch"
    launch.mkdir()
    (launch / "my_script.py").write_text("import os, sys\nprint('ran in', os.getcwd(), sys.argv[1:])\n")
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")
    queue.send(json.dumps({"service": "s", "command": {"arguments": [{"type": "parameter", "value": "x"}]}}))
    done = subprocess.run(
        [sys.executable, WORKER_PY, "native", "--queue", queue.url, "--results", results.url,
         "--work-root", str(tmp_path / "w"), "--once", *form],
        cwd=launch, env=cli_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == exitcodes.EXIT_OK, done.stderr
    [reply] = results.receive(1, 0, 30)
    result = json.loads(reply.body)
    assert result["state"] == "succeeded", result
    stdout = result["stdout"]["text"]
    assert (
        "ran in" in stdout and "['x']" in stdout and str(launch) not in stdout.split("ran in")[1].split()[0]
    )


def test_validate_runs_the_workers_admission_and_reports_everything_at_once(tmp_path: Path) -> None:
    message = tmp_path / "m.json"
    arguments = [
        {"type": "input", "value": "s3://b/../x"},
        {"type": "input", "value": "ftp://host/x"},
        {"type": "output", "value": "s3://b/a//b"},
        {"type": "bogus"},
    ]
    message.write_text(json.dumps({"service": "s", "command": {"arguments": arguments}}))
    done = run_cli("validate", str(message))
    assert done.returncode == exitcodes.EXIT_FAILED
    for path in ("arguments[0].value", "arguments[1].value", "arguments[2].value", "arguments[3].type"):
        assert f"$.command.{path}" in done.stdout, done.stdout
    refused_env = tmp_path / "env.json"
    refused_env.write_text(
        json.dumps({"service": "s", "env": {"LD_PRELOAD": "x"}, "command": {"arguments": []}})
    )
    done = run_cli("validate", str(refused_env))
    assert done.returncode == exitcodes.EXIT_FAILED and "$.env.LD_PRELOAD" in done.stdout
    local_file = tmp_path / "local.json"
    local_file.write_text(
        json.dumps({"service": "s", "command": {"arguments": [{"type": "input", "value": "/etc/hosts"}]}})
    )
    assert (
        run_cli("validate", str(local_file)).returncode == exitcodes.EXIT_OK
    )  # the embedded queue allows it
    on_sqs = run_cli("validate", "--queue", "https://sqs.us-east-1.amazonaws.com/1/q", str(local_file))
    assert on_sqs.returncode == exitcodes.EXIT_FAILED and "--allow-local-files" in on_sqs.stdout


def _readme_commands() -> list[str]:
    """The command lines of the README's "Running a worker" block, comments dropped."""
    from tests.helpers.processes import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Running a worker", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.strip().splitlines()]


def test_the_readmes_own_command_lines_run_as_written(tmp_path: Path) -> None:
    """Each line that needs no AWS account runs as written (on the embedded queue, from a
    directory holding my_script.py and message.json); a native line gets --once to end."""
    import shlex
    import subprocess
    import sys

    from tests.helpers.processes import WORKER_PY

    (tmp_path / "my_script.py").write_text("import sys\nprint('args', sys.argv[1:])\n")
    (tmp_path / "message.json").write_text(json.dumps({"service": "s", "command": {"arguments": []}}))
    env = cli_env(LANWORKER_QUEUE=f"local:{tmp_path / 'q.db'}#jobs", LANWORKER_WORK_ROOT=str(tmp_path / "w"))
    ran = []
    for line in _readme_commands():
        words = shlex.split(line.replace(" ...", "").replace(" [--redrive]", ""))  # the listing form
        if words[:2] != ["python3", "worker.py"] or any(
            marker in line for marker in ("CMD", "sqs.", "s3://", "EVENTS_URL", "IMAGE-GLOB", "--wait")
        ):
            continue  # placeholders, AWS, or a docker engine: covered elsewhere
        argv = [sys.executable, WORKER_PY, *words[2:]]
        if words[2] == "native":
            argv.insert(3, "--once")
            subprocess.run([sys.executable, WORKER_PY, "submit", "message.json"], cwd=tmp_path, env=env, check=True,
                           capture_output=True, timeout=60)  # fmt: skip
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == exitcodes.EXIT_OK, (line, done.stderr[-2000:])
        ran.append(words[2])
    assert sorted(set(ran)) == ["dead-letters", "native", "submit", "validate"], ran
    assert ran.count("native") == 2  # the JSON array and the bracket forms
