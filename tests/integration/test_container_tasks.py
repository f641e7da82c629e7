"""Container tasks (TES-shaped messages) on a real engine: executors in order, shared files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.docker


@pytest.fixture
def run_task(run_docker_message, busybox_image: str):
    def run(task: dict[str, Any]) -> dict[str, Any]:
        for executor in task["executors"]:
            executor.setdefault("image", busybox_image)
        return run_docker_message({"service": busybox_image, **task})

    return run


def test_executors_share_inputs_volumes_and_outputs(run_task, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_task(
        {
            "inputs": [{"path": "/inputs/greeting.txt", "content": "hello task\n"}],
            "volumes": ["/vol"],
            "executors": [
                {"command": ["sh", "-c", "tr a-z A-Z < /inputs/greeting.txt > /vol/upper.txt"]},
                {
                    "command": [
                        "sh",
                        "-c",
                        "cat /vol/upper.txt; mkdir -p /results/dir/sub; echo a > /results/dir/a.log; echo b > /results/dir/sub/b.log; echo x > /results/x.txt",
                    ],
                    "stdout": "/results/stdout.txt",
                    "workdir": "/results",
                },
            ],
            "outputs": [
                {"path": "/results/stdout.txt", "url": f"file://{out}/stdout.txt"},
                {"path": "/results/dir", "url": f"file://{out}/dir", "type": "DIRECTORY"},
                {"path": "/results/*.txt", "path_prefix": "/results/", "url": f"file://{out}/glob/"},
                {"path": "/results/*.none", "path_prefix": "/results/", "url": f"file://{out}/none/"},
            ],
        }
    )
    assert result["state"] == "succeeded", result
    assert (out / "stdout.txt").read_text() == "HELLO TASK\n"
    assert (out / "dir" / "sub" / "b.log").read_text() == "b\n"
    assert sorted(p.name for p in (out / "glob").iterdir()) == ["stdout.txt", "x.txt"]
    assert not (out / "none").exists()
    assert [log["exit_code"] for log in result["executors"]] == [0, 0]
    assert result["executors"][1]["stdout"] == "HELLO TASK\n"
    paths = {o["path"] for o in result["outputs"]}
    assert {"/results/stdout.txt", "/results/dir/sub/b.log", "/results/x.txt"} <= paths


def test_the_first_failing_executor_stops_the_task(run_task, tmp_path: Path) -> None:
    result = run_task(
        {
            "volumes": ["/vol"],
            "upload_on_failure": True,
            "executors": [
                {"command": ["sh", "-c", "echo doomed >&2; echo rc > /vol/rc; exit 3"], "ignore_error": True},
                {"command": ["sh", "-c", "exit 4"]},
                {"command": ["sh", "-c", "echo never"]},
            ],
            "outputs": [{"path": "/vol/rc", "url": f"file://{tmp_path}/rc"}],
        }
    )
    assert (result["state"], result["reason"], result["exit_code"]) == ("failed", "exit-code", 4)
    assert [log["exit_code"] for log in result["executors"]] == [3, 4]
    assert result["executors"][0]["stderr"] == "doomed\n"
    assert (tmp_path / "rc").read_text() == "rc\n"  # uploaded although the task failed


def test_an_executor_image_outside_the_allowlist_refuses_the_task(run_task) -> None:
    result = run_task({"executors": [{"command": ["true"]}, {"image": "evil/miner", "command": ["true"]}]})
    assert result["reason"] == "invalid-message" and "evil/miner" in result["error"]
