"""Wall time per job of the docker executor against a bare `docker run --rm` of the same
image and command, measured in the same run.

    .venv/bin/python benchmarks/docker_overhead.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import docker

from lanworker.core.config import build_config
from lanworker.loop.assemble import build_worker
from lanworker.queues import LocalQueue
from tests.helpers.docker_images import build_busybox_image


def bare_docker_run(image: str, jobs: int) -> float:
    started = time.perf_counter()
    for _ in range(jobs):
        subprocess.run(["docker", "run", "--rm", "--network", "none", image, "true"], check=True)
    return time.perf_counter() - started


def lanworker_docker(image: str, jobs: int, scratch: Path) -> float:
    queue = LocalQueue(f"local:{scratch / 'q.db'}#jobs")
    for _ in range(jobs):
        queue.send(
            json.dumps({"service": image, "command": {"arguments": [{"type": "parameter", "value": "true"}]}})
        )
    config = build_config(
        {
            "mode": "docker",
            "queue_url": queue.url,
            "once": True,
            "wait_time_s": 0,
            "work_root": scratch / "work",
            "allow_images": (image,),
            "log_level": "WARNING",
        },
        {},
    )
    worker = build_worker(config)
    started = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - started
    assert queue.counts()["visible"] == 0
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    image = build_busybox_image(docker.from_env())
    with tempfile.TemporaryDirectory() as scratch:
        bare_docker_run(image, 2)  # warm the engine's caches for both sides
        baseline = bare_docker_run(image, args.jobs)
        measured = lanworker_docker(image, args.jobs, Path(scratch))
    print(f"{args.jobs} jobs of `true` in {image}")
    print(f"  docker run --rm (CLI)          {1000 * baseline / args.jobs:8.1f} ms/job")
    print(
        f"  lanworker docker executor      {1000 * measured / args.jobs:8.1f} ms/job"
        f"  ratio vs docker run {measured / baseline:5.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
