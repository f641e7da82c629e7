"""A hostile container: it may only write its job dir, and nothing it leaves is followed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def run_container(run_docker_message, busybox_image: str):
    """`sh -c SCRIPT sh ARGS...` in the busybox image; `message` adds top-level fields."""

    def run(script: str, *arguments: dict[str, Any], **flags: Any) -> dict[str, Any]:
        extra = flags.pop("message", {})
        command = {
            "stdout": {"type": "pipe", "value": None},
            "arguments": [
                {"type": "parameter", "value": "sh"},
                {"type": "parameter", "name": "-c", "value": script},
                {"type": "parameter", "value": "sh"},
                *arguments,
            ],
        }
        return run_docker_message({"service": busybox_image, "command": command, **extra}, **flags)

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


def test_a_link_planted_in_a_volume_creates_nothing_on_the_host(
    run_docker_message, busybox_image: str, tmp_path: Path
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    plant = {"image": busybox_image, "command": ["sh", "-c", f"ln -s {host} /vol/sub"]}
    follow = {"image": busybox_image, "command": ["true"], "stdout": "/vol/sub/escaped/out.txt"}
    result = run_docker_message(
        {"service": busybox_image, "queue": "tes", "executors": [plant, follow], "volumes": ["/vol"]}
    )
    assert (result["state"], result["reason"]) == ("failed", "unsafe-output"), result
    assert list(host.iterdir()) == []
