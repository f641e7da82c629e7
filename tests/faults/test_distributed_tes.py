"""Two API nodes on one DynamoDB table, docker workers on SQS SIGKILLed during a batch of
tasks: every task reaches a final state, and both nodes report the same (issue 19)."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.helpers.faults import summary
from tests.helpers.moto import MotoServer, free_port
from tests.helpers.processes import answers, cli_env, start_cli, wait_until

pytestmark = pytest.mark.docker

TASKS = 12
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def test_workers_killed_during_a_batch_leave_every_task_final_on_both_nodes(
    moto_server: MotoServer, queue_factory, busybox_image: str, tmp_path: Path
) -> None:
    jobs, events = queue_factory(), queue_factory()
    control = f"{tmp_path}/control"
    env = cli_env(**moto_server.environment())
    common = ["--queue", jobs, "--events", events, "--control", control]
    store = ["--store", f"dynamodb://tasks-{uuid.uuid4().hex[:8]}"]
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = [
        start_cli("serve", "--port", str(port), "--workers", "0", "--state-dir", str(tmp_path / f"n{port}"),
                  *common, *store, env=env, log_path=tmp_path / f"api-{port}.log")
        for port in ports
    ]  # fmt: skip

    def worker(name: str) -> subprocess.Popen[bytes]:
        process = start_cli(
            "docker", *common, "--allow-image", "lanworker-test/*", "--work-root", str(tmp_path / "work"),
            "--worker-id", name, "--wait-time-s", "1", "--visibility-timeout-s", "8", "--heartbeat-interval-s", "2",
            env=env, log_path=tmp_path / f"{name}.log",
        )  # fmt: skip
        processes.append(process)
        return process

    urls = [f"http://127.0.0.1:{port}/ga4gh/tes/v1" for port in ports]
    try:
        for url in urls:
            wait_until(lambda url=url: answers(f"{url}/service-info"), 60, "an API node")
        ids = []
        for index in range(TASKS):
            task = {
                "name": f"batch-{index}",
                "executors": [{"image": busybox_image, "command": ["sh", "-c", f"sleep 2; echo {index}"]}],
            }
            ids.append(requests.post(f"{urls[index % 2]}/tasks", json=task, timeout=30).json()["id"])
        first, second = worker("w1"), worker("w2")
        kills = 0
        for victim, name in ((first, "w1-again"), (second, "w2-again")):
            wait_until(
                lambda: any(_state(urls[0], task_id) == "RUNNING" for task_id in ids), 120, "a task to run"
            )
            time.sleep(1)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            worker(name)

        def all_final() -> bool:
            return all(_state(urls[0], task_id) in FINAL for task_id in ids)

        wait_until(all_final, 300, "every task to be final")
        wait_until(
            lambda: [_state(urls[1], t) for t in ids] == [_state(urls[0], t) for t in ids], 60, "agreement"
        )
        states = [_state(urls[0], task_id) for task_id in ids]
        completed = states.count("COMPLETE")
        assert completed == TASKS, states
        summary(f"distributed-tes-{kills}-kills", TASKS, completed, TASKS - completed, 0)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def _state(url: str, task_id: str) -> str | None:
    response = requests.get(f"{url}/tasks/{task_id}", timeout=10)
    return str(response.json()["state"]) if response.status_code == 200 else None
