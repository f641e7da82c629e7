"""The CLI as a real subprocess: exit codes per failure kind, and real signals."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from lanworker import cli
from lanworker.queues import LocalQueue
from tests.helpers.moto import AWS_TEST_ENV, free_port
from tests.helpers.processes import cli_env, run_cli, start_cli, wait_until

TOOL = str(Path(__file__).resolve().parents[1] / "helpers" / "tool.py")


@pytest.fixture
def local(tmp_path: Path) -> LocalQueue:
    return LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")


def worker_args(local: LocalQueue, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "native",
        "--queue",
        local.url,
        "--work-root",
        str(tmp_path / "work"),
        "--log-format",
        "json",
        "--wait-time-s",
        "1",
        *extra,
        "--",
        "python3",
        TOOL,
    ]


def wait_for_a_job_dir(tmp_path: Path) -> None:
    """Until a job has passed the worker's shutdown check: its job dir is made after it.
    (A message in flight may still be waiting for its slot, and a signal then releases it
    without running it.)"""
    wait_until(
        lambda: any(not path.name.startswith(".") for path in (tmp_path / "work").glob("*/*")),
        what="the job to start",
    )


def sleep_job(seconds: float) -> str:
    return json.dumps(
        {
            "service": "tool",
            "command": {"arguments": [{"type": "parameter", "name": "--sleep", "value": seconds}]},
        }
    )


def test_validate_reports_every_error_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"service": "", "command": {"arguments": [{"type": "flag"}], "stdin": {"type": "x"}}})
    )
    completed = run_cli("validate", str(bad), "examples/seed-message.json")
    assert completed.returncode == cli.EXIT_FAILED
    lines = completed.stdout.splitlines()
    assert (
        f"{bad}: $.command.arguments[0].type: 'flag' is not one of ['input', 'output', 'parameter']" in lines
    )
    assert any(line.startswith(f"{bad}: $.command.stdin.type:") for line in lines)
    assert any(line.startswith(f"{bad}: $.service:") for line in lines)
    assert "examples/seed-message.json: ok" in lines


def test_submit_refuses_invalid_messages(local: LocalQueue) -> None:
    completed = run_cli("submit", "--queue", local.url, "-", input_text='{"service": "s"}')
    assert completed.returncode == cli.EXIT_FAILED
    assert "'command' is a required property" in completed.stderr
    assert local.counts()["visible"] == 0


def test_config_error_exit_code() -> None:
    completed = run_cli("native")
    assert completed.returncode == cli.EXIT_CONFIG
    assert "needs a command" in completed.stderr
    completed = run_cli("native", "true", env=cli_env(LANWORKER_CONCURRENCY="lots"))
    assert completed.returncode == cli.EXIT_CONFIG


def test_unreachable_queue_exit_code(tmp_path: Path) -> None:
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    env = cli_env(**{**AWS_TEST_ENV, "AWS_ENDPOINT_URL": dead_endpoint})
    completed = run_cli("native", "--queue", f"{dead_endpoint}/123456789012/nope", "--once", "true", env=env)
    assert completed.returncode == cli.EXIT_QUEUE_UNREACHABLE, completed.stderr


def test_submit_wait_round_trip(local: LocalQueue, tmp_path: Path) -> None:
    worker = start_cli(*worker_args(local, tmp_path), log_path=tmp_path / "worker.log")
    try:
        completed = run_cli("submit", "--queue", local.url, "--wait", "-", input_text=sleep_job(0))
        assert completed.returncode == 0, completed.stderr
        job_id, result_text = completed.stdout.split("\n", 1)
        result = json.loads(result_text)
        assert result["job_id"] == job_id and result["state"] == "succeeded"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == cli.EXIT_STOPPED


def test_sigterm_lets_the_running_job_finish(local: LocalQueue, tmp_path: Path) -> None:
    results = local.sibling("results")
    local.send(sleep_job(2))
    worker = start_cli(
        *worker_args(local, tmp_path, "--results", results.url, "--grace-period-s", "30"),
        log_path=tmp_path / "worker.log",
    )
    wait_for_a_job_dir(tmp_path)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == cli.EXIT_STOPPED
    [message] = results.receive(1, 0, 30)
    assert json.loads(message.body)["state"] == "succeeded"
    assert local.counts() == {"visible": 0, "in_flight": 0, "dead_letters": 0}
    assert not any((tmp_path / "work").glob("*/*")), "job dirs must be removed"


def test_grace_period_over_releases_the_job(local: LocalQueue, tmp_path: Path) -> None:
    local.send(sleep_job(60))
    worker = start_cli(
        *worker_args(local, tmp_path, "--grace-period-s", "1", "--visibility-timeout-s", "600"),
        log_path=tmp_path / "worker.log",
    )
    wait_for_a_job_dir(tmp_path)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == cli.EXIT_STOPPED
    # Released with visibility 0: another worker can take it now, not in ten minutes.
    assert local.counts()["visible"] == 1


def test_second_signal_forces(local: LocalQueue, tmp_path: Path) -> None:
    local.send(sleep_job(60))
    worker = start_cli(
        *worker_args(local, tmp_path, "--grace-period-s", "120", "--visibility-timeout-s", "600"),
        log_path=tmp_path / "worker.log",
    )
    wait_for_a_job_dir(tmp_path)
    worker.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        worker.wait(timeout=1)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=30) == cli.EXIT_FORCED
    assert local.counts()["visible"] == 1


def test_sigterm_while_idle_exits_promptly(local: LocalQueue, tmp_path: Path) -> None:
    worker = start_cli(*worker_args(local, tmp_path), log_path=tmp_path / "worker.log")
    wait_until(lambda: (tmp_path / "work").exists(), what="the worker to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == cli.EXIT_STOPPED


def test_metrics_and_health_endpoints(local: LocalQueue, tmp_path: Path) -> None:
    import urllib.request

    port = free_port()
    local.send(sleep_job(0))
    worker = start_cli(
        *worker_args(local, tmp_path, "--metrics-port", str(port)), log_path=tmp_path / "worker.log"
    )
    try:
        wait_until(
            lambda: local.counts() == {"visible": 0, "in_flight": 0, "dead_letters": 0}, what="the job"
        )

        def fetch(path: str) -> tuple[int, str]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                return response.status, response.read().decode()

        wait_until(
            lambda: 'lanworker_jobs_total{outcome="succeeded"} 1.0' in fetch("/metrics")[1], what="metrics"
        )
        status, body = fetch("/healthz")
        assert status == 200 and json.loads(body)["healthy"] is True
        metrics = fetch("/metrics")[1]
        assert 'lanworker_phase_seconds_count{phase="running"} 1.0' in metrics
        assert "lanworker_jobs_in_flight 0.0" in metrics
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == cli.EXIT_STOPPED
