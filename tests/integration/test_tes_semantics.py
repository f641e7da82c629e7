"""What other TES servers (TESK, Funnel) run and workflow engines send (issue 20), on a real
`serve` with docker workers: tasks at /tmp, nested and repeated inputs, stdin from the image,
and the task network."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

pytestmark = pytest.mark.docker

IMAGE = "lanworker-test/busybox:1"


def run_task(tes_url: str, task: dict[str, Any], timeout_s: float = 120) -> dict[str, Any]:
    response = requests.post(f"{tes_url}/ga4gh/tes/v1/tasks", json=task, timeout=30)
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        document = requests.get(f"{tes_url}/ga4gh/tes/v1/tasks/{task_id}?view=FULL", timeout=30).json()
        if document["state"] in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
            return dict(document)
        time.sleep(0.3)
    raise AssertionError(f"task {task_id} did not finish: {document}")


def stdout_of(document: dict[str, Any]) -> str:
    return str(document["logs"][0]["logs"][0]["stdout"])


def test_the_snakemake_plugins_task_shape_runs_at_tmp(tes_url: str) -> None:
    """One executor running a job script given as content at /tmp, with workdir /tmp: it
    was SYSTEM_ERROR 'Duplicate mount point: /tmp' (the worker's own tmpfs there)."""
    script = "echo ran in $(pwd); mkdir -p pkg; printf '#!/bin/sh\\necho installed tool\\n' > pkg/tool; chmod +x pkg/tool; ./pkg/tool\n"
    document = run_task(tes_url, {
        "executors": [{"image": IMAGE, "command": ["/bin/sh", "/tmp/run_snakemake.sh"], "workdir": "/tmp"}],
        "inputs": [{"path": "/tmp/run_snakemake.sh", "content": script}],
    })  # fmt: skip
    assert document["state"] == "COMPLETE", document
    assert "ran in /tmp" in stdout_of(document) and "installed tool" in stdout_of(
        document
    )  # writable, executable


def test_a_file_input_inside_a_directory_input_is_merged_into_it(
    tes_url: str, s3: Any, bucket_factory: Any
) -> None:
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="tree/a.txt", Body=b"from the directory")
    s3.put_object(Bucket=bucket, Key="tree/sub/b.txt", Body=b"b")
    document = run_task(tes_url, {
        "executors": [{"image": IMAGE, "command": ["sh", "-c", "cat /tes/a.txt /tes/sub/b.txt /tes/files/x"]}],
        "inputs": [
            {"path": "/tes", "url": f"s3://{bucket}/tree/", "type": "DIRECTORY"},
            {"path": "/tes/files/x", "content": "nested file"},
        ],
    })  # fmt: skip
    assert document["state"] == "COMPLETE", document
    assert stdout_of(document) == "from the directorybnested file"


def test_two_inputs_at_one_path_apply_in_order(tes_url: str) -> None:
    document = run_task(tes_url, {
        "executors": [{"image": IMAGE, "command": ["cat", "/data/x"]}],
        "inputs": [{"path": "/data/x", "content": "first"}, {"path": "/data/x", "content": "second"}],
    })  # fmt: skip
    assert document["state"] == "COMPLETE", document
    assert stdout_of(document) == "second"


def test_stdin_may_name_a_file_of_the_image(tes_url: str) -> None:
    document = run_task(tes_url, {
        "executors": [{"image": IMAGE, "command": ["wc", "-c"], "stdin": "/bin/busybox"}],
    })  # fmt: skip
    assert document["state"] == "COMPLETE", document
    assert int(stdout_of(document).split()[0]) > 100_000
    missing = run_task(
        tes_url, {"executors": [{"image": IMAGE, "command": ["cat"], "stdin": "/no/such/file"}]}
    )
    assert missing["state"] == "SYSTEM_ERROR" and "/no/such/file" in " ".join(
        missing["logs"][0]["system_logs"]
    )


def test_tasks_get_the_bridge_network_by_default(tes_url: str) -> None:
    """Looked at, not used: the test sends no traffic (only loopback is ours to use)."""
    document = run_task(tes_url, {"executors": [{"image": IMAGE, "command": ["ls", "/sys/class/net"]}]})
    assert document["state"] == "COMPLETE", document
    interfaces = stdout_of(document).split()
    assert "lo" in interfaces and any(name.startswith("eth") for name in interfaces), interfaces
