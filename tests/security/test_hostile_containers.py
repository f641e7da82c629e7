"""A hostile container: it may only write its job dir, and nothing it leaves is followed."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from lanworker.config import build_config
from lanworker.queues import LocalQueue
from lanworker.worker import build_worker

pytestmark = pytest.mark.docker


@pytest.fixture
def run_container(tmp_path: Path, work_root: Path, busybox_image: str):
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")

    def run(script: str, *arguments: dict[str, Any], **flags: Any) -> dict[str, Any]:
        extra = flags.pop("message", {})
        queue.send(
            json.dumps(
                {
                    "service": busybox_image,
                    "command": {
                        "stdout": {"type": "pipe", "value": None},
                        "arguments": [
                            {"type": "parameter", "value": "sh"},
                            {"type": "parameter", "name": "-c", "value": script},
                            {"type": "parameter", "value": "sh"},
                            *arguments,
                        ],
                    },
                    **extra,
                }
            )
        )
        config = build_config(
            {
                "mode": "docker",
                "queue_url": queue.url,
                "results_url": results.url,
                "once": True,
                "wait_time_s": 0,
                "work_root": work_root,
                "allow_images": ("lanworker-test/*",),
                "worker_id": f"hostile-{uuid.uuid4().hex[:6]}",
                **flags,
            },
            {},
        )
        build_worker(config).run()
        [reply] = results.receive(1, 0, 30)
        results.delete(reply)
        return dict(json.loads(reply.body))

    return run


def test_a_container_cannot_make_the_worker_upload_a_host_file(run_container, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "a.txt").write_text("host secret")
    destination = tmp_path / "dest"
    # Inside the container the link points nowhere; on the host it points at the host dir.
    script = f'd=$(dirname "$1"); rm -rf "$d"; ln -s {host} "$d"'
    output = {"type": "output", "value": f"file://{destination}/sub/a.txt"}
    result = run_container(script, output, allow_local_files=True)
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output"), result
    assert not destination.exists()


def test_a_container_filling_the_job_dir_is_stopped(run_container) -> None:
    script = (
        "i=0; while true; do dd if=/dev/zero of=/job/out/f$i bs=1M count=10 2>/dev/null; i=$((i+1)); done"
    )
    result = run_container(script, max_job_disk_mb=40, message={"timeout_s": 120})
    assert (result["state"], result["reason"]) == ("failed", "disk-limit"), result


def test_a_huge_pids_request_is_refused(run_container) -> None:
    result = run_container("true", message={"resources": {"pids": 4000000}})
    assert result["reason"] == "invalid-message" and "pids" in result["error"]


def test_containers_get_a_memory_limit_by_default(run_container) -> None:
    script = "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes"
    result = run_container(script, default_memory_mb=300)
    assert result["state"] == "succeeded", result
    assert int(result["stdout"]["text"].strip()) == 300 * 1024 * 1024
