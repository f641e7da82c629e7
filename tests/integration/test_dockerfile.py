"""The project's Dockerfile, built with no registry and run as the README says."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from lanworker.queues import LocalQueue
from tests.helpers.processes import REPO_ROOT, wait_until

pytestmark = pytest.mark.docker

IMAGE = "lanworker-test/worker:ci"
SOCKET = "/var/run/docker.sock"


def docker(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="session")
def worker_image(docker_client: Any, wheelhouse: tuple[Path, str]) -> str:
    """scripts/docker-build.sh: a Debian base image from debootstrap, then the build."""
    if not os.path.exists(SOCKET):
        pytest.skip(f"the image is run with {SOCKET} mounted; this engine has no such socket")
    built = subprocess.run(
        ["bash", "scripts/docker-build.sh"],
        cwd=REPO_ROOT,
        env={**os.environ, "TAG": IMAGE},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def test_the_image_runs_a_container_job_and_answers_healthz(
    worker_image: str, busybox_image: str, tmp_path: Path
) -> None:
    work = tmp_path / "srv"  # the same path on the host and in the container, as the README says
    work.mkdir()
    queue = LocalQueue(f"local:{work / 'queue.db'}#jobs")
    queue.send(
        json.dumps(
            {
                "id": "in-the-image",
                "service": busybox_image,
                "command": {
                    "stdin": {"type": "pipe", "value": "from the host"},
                    "stdout": {"type": "pipe", "value": None},
                    "arguments": [{"type": "parameter", "value": "cat"}],
                },
            }
        )
    )
    del queue  # the worker in the container (uid 10001) must be able to write the file
    for path in [work, *work.iterdir()]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    name = f"lanworker-ci-{uuid.uuid4().hex[:8]}"
    started = docker(
        "run", "-d", "--name", name, "--stop-timeout", "90",
        "-v", f"{SOCKET}:{SOCKET}", "--group-add", str(os.stat(SOCKET).st_gid),
        "-v", f"{work}:{work}", "-e", f"LANWORKER_WORK_ROOT={work}",
        "-e", f"LANWORKER_QUEUE=local:{work / 'queue.db'}#jobs",
        "-e", f"LANWORKER_RESULTS=local:{work / 'queue.db'}#results",
        "-e", "LANWORKER_WAIT_TIME_S=1",
        worker_image, "docker", "--allow-image", "lanworker-test/*",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        results = LocalQueue(f"local:{work / 'queue.db'}#results")
        replies: list[Any] = []
        wait_until(
            lambda: bool(replies.extend(results.receive(1, 0, 30)) or replies), 120, "the job's result"
        )
        result = json.loads(replies[0].body)
        assert (result["job_id"], result["state"]) == ("in-the-image", "succeeded"), result
        assert result["stdout"]["text"] == "from the host"
        healthz = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4).read().decode())"
        answered = docker("exec", name, "python3", "-c", healthz)
        assert answered.returncode == 0 and json.loads(answered.stdout)["healthy"] is True, answered.stderr
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        stopped_at = time.monotonic()
        assert docker("stop", name).returncode == 0
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "75"
        assert time.monotonic() - stopped_at < 60
    finally:
        logs = docker("logs", name).stderr
        docker("rm", "-f", name)
        print(logs[-3000:])
