"""Fault-injection fixtures: workers as real processes, results gathered by job id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lanworker.queues import SqsQueue
from tests.helpers.aws_fixtures import TOOL
from tests.helpers.moto import MotoServer
from tests.helpers.processes import cli_env, start_cli, wait_until

FINAL_STATES = ("succeeded", "failed", "canceled")


@pytest.fixture
def spawn_worker(
    moto_server: MotoServer, work_root: Path, tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(
        queue_url: str,
        *extra: str,
        mode: str = "native",
        env: dict[str, str] | None = None,
        worker_id: str | None = None,
    ) -> subprocess.Popen[bytes]:
        worker_id = worker_id or f"fault-{uuid.uuid4().hex[:8]}"
        args = [
            mode,
            "--queue",
            queue_url,
            "--work-root",
            str(work_root),
            "--worker-id",
            worker_id,
            "--log-format",
            "json",
            "--wait-time-s",
            "1",
            *extra,
        ]
        if mode == "native":
            args += ["--", "python3", TOOL]
        process = start_cli(
            *args,
            env=cli_env(**moto_server.environment(), **(env or {})),
            log_path=tmp_path / f"{worker_id}.log",
        )
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()


def collect_results(results_url: str, into: dict[str, list[dict[str, Any]]]) -> None:
    """Drain a results queue into job id -> results (consumes them)."""
    queue = SqsQueue(results_url)
    while batch := queue.receive(10, 0, 30):
        for message in batch:
            result = json.loads(message.body)
            into.setdefault(result["job_id"], []).append(result)
            queue.delete(message)


def tally(job_ids: list[str], results: dict[str, list[dict[str, Any]]]) -> tuple[int, int, int]:
    """(completed, lost, duplicates): duplicates are final results beyond one per job."""
    finals = Counter({job: sum(r["state"] in FINAL_STATES for r in results.get(job, [])) for job in job_ids})
    completed = sum(1 for job in job_ids if finals[job] >= 1)
    return completed, len(job_ids) - completed, sum(max(0, n - 1) for n in finals.values())


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def tool_job(job_id: str, *arguments: tuple[str, object], **extra: Any) -> str:
    return json.dumps(
        {
            "id": job_id,
            "service": "tool",
            "command": {
                "arguments": [
                    {"type": "parameter", "name": name, "value": value} for name, value in arguments
                ]
            },
            **extra,
        }
    )


def wait_for_results(
    results_url: str, job_ids: list[str], timeout_s: float
) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}

    def all_final() -> bool:
        collect_results(results_url, found)
        return tally(job_ids, found)[1] == 0

    wait_until(all_final, timeout_s, what=f"results of {len(job_ids)} jobs")
    return found
