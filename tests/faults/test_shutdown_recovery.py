"""Shutdown and crash recovery with the default settings take seconds, not minutes (issue 19).

Bounds here are generous functional limits (what a user would call "it hangs"), not
performance figures: those live in benchmarks/.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from lanworker import cli
from lanworker.queues import SqsQueue
from tests.faults.conftest import tally, tool_job, wait_for_results
from tests.helpers.aws_fixtures import TOOL
from tests.helpers.faults import summary
from tests.helpers.moto import MotoServer
from tests.helpers.processes import cli_env, start_cli, wait_until


def test_an_idle_worker_stops_at_once_on_sigterm(
    moto_server: MotoServer, queue_factory, work_root: Path, tmp_path: Path
) -> None:
    queue = queue_factory()
    log = tmp_path / "idle.log"
    process = start_cli(
        "native", "--queue", queue, "--work-root", str(work_root), "--log-format", "json", "--", "python3", TOOL,
        env=cli_env(**moto_server.environment()), log_path=log,
    )  # fmt: skip
    wait_until(lambda: log.exists() and "listening" in log.read_text(), 60, "the worker to listen")
    time.sleep(1.5)  # well inside a receive
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=6) == cli.EXIT_STOPPED, log.read_text()[-2000:]
    print(f"idle worker stopped {time.monotonic() - asked:.2f} s after SIGTERM")


def test_a_killed_workers_job_runs_again_within_a_minute_by_default(
    queue_factory, spawn_worker, tmp_path: Path
) -> None:
    queue, results = queue_factory(), queue_factory()
    record = tmp_path / "executions"
    SqsQueue(queue).send(tool_job("recovered", ("--sleep", 3), ("--record", str(record))))
    first = spawn_worker(queue, worker_id="first")  # default visibility timeout and heartbeat
    wait_until(
        lambda: record.exists() and record.read_text().split() == ["recovered"], 60, "the job to start"
    )
    killed = time.monotonic()
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = spawn_worker(queue, "--results", results, worker_id="second")
    found = wait_for_results(results, ["recovered"], 90)
    print(f"recovered {time.monotonic() - killed:.1f} s after the kill")
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == cli.EXIT_STOPPED
    [result] = found["recovered"]
    assert result["state"] == "succeeded" and result["receive_count"] == 2
    completed, lost, duplicates = tally(["recovered"], found)
    summary("sigkill-default-visibility", 1, completed, lost, duplicates)
    assert lost == 0
