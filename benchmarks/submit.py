"""Submit and start: how fast one `serve` (embedded store and queue) takes tasks, and how
soon a task runs and completes against a bare `docker run --rm`, in the same run.

    .venv/bin/python benchmarks/submit.py [--submits 4000] [--clients 8] [--tasks 20]

1. Submits/s: --clients keep-alive connections POST --submits tasks to a `serve` without
   workers, each sending its next task when the last is answered (goal: 2,000/s or more).
2. `echo hi`, one task at a time on `serve --workers 1`: POST to RUNNING and POST to
   COMPLETE (the task polled every 5 ms), alternated with `docker run --rm --network none`
   of the same image and command; medians, and COMPLETE as a ratio of the docker run
   (goal: 1.2x or less).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker
import requests

from benchmarks.front_door import TES, serving
from benchmarks.rawhttp import connect, exchange, request_bytes, run_clients
from tests.helpers.docker_images import BUSYBOX_IMAGE, build_busybox_image

ECHO = {"name": "echo", "executors": [{"image": BUSYBOX_IMAGE, "command": ["echo", "hi"]}]}
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


async def submit_all(port: int, submits: int, clients: int) -> tuple[float, int]:
    """Tasks/s over all clients, and how many answers were not 200."""
    request = request_bytes("POST", TES, port, json.dumps(ECHO).encode())
    left = submits
    failed = 0

    async def client() -> None:
        nonlocal left, failed
        transport, connection = await connect(port)
        while left > 0:
            left -= 1
            failed += await exchange(transport, connection, request) != 200
        transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return submits / (time.perf_counter() - started), failed


def task_times(session: requests.Session, base: str) -> tuple[float, float]:
    """Seconds from POST to RUNNING (or later) and to COMPLETE, polled every 5 ms."""
    started = time.perf_counter()
    task_id = session.post(f"{base}{TES}", json=ECHO, timeout=30).json()["id"]
    running = None
    while time.perf_counter() - started < 120:
        state = session.get(f"{base}{TES}/{task_id}", timeout=30).json()["state"]
        if running is None and state not in ("QUEUED", "INITIALIZING"):
            running = time.perf_counter() - started
        if state in FINAL:
            if state != "COMPLETE":
                raise SystemExit(f"task {task_id} ended {state}")
            return running or 0.0, time.perf_counter() - started
        time.sleep(0.005)
    raise SystemExit(f"task {task_id} did not finish")


def docker_run() -> float:
    started = time.perf_counter()
    subprocess.run(
        ["docker", "run", "--rm", "--network", "none", BUSYBOX_IMAGE, "echo", "hi"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--submits", type=int, default=4000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument(
        "--tasks", type=int, default=20, help="echo tasks (and docker runs) timed one at a time"
    )
    args = parser.parse_args()
    build_busybox_image(docker.from_env())
    with tempfile.TemporaryDirectory() as state:
        with serving(f"sqlite:{state}/submit.db", state, "--queue", f"local:{state}/submit-queue.db") as (
            base,
            _,
        ):
            port = int(base.rsplit(":", 1)[1])
            run_clients(submit_all(port, 200, args.clients), 120)  # warm
            rate, failed = run_clients(submit_all(port, args.submits, args.clients), 600)
        print(
            f"submits: {args.submits} tasks from {args.clients} clients, no workers: {rate:.0f}/s ({failed} not 200)"
        )
        flags = ["--workers", "1", "--allow-image", BUSYBOX_IMAGE, "--task-network", "none"]
        runs: dict[str, list[float]] = {"running": [], "complete": [], "docker": []}
        with serving(f"sqlite:{state}/tasks.db", state, *flags) as (base, _), requests.Session() as session:
            task_times(session, base), docker_run()  # warm both
            for _ in range(args.tasks):
                running, complete = task_times(session, base)
                runs["running"].append(running)
                runs["complete"].append(complete)
                runs["docker"].append(docker_run())
    median = {name: statistics.median(values) * 1000 for name, values in runs.items()}
    print(
        f"echo hi, {args.tasks} each, alternated: POST to RUNNING {median['running']:.0f} ms, "
        f"POST to COMPLETE {median['complete']:.0f} ms; docker run --rm {median['docker']:.0f} ms: "
        f"{median['complete'] / median['docker']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
