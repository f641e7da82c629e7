"""A full disk is named and waited out, never an unexpected error, and nothing is lost (issue 19)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lanworker.queues import LocalQueue
from tests.helpers.faults import summary
from tests.helpers.moto import free_port


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 30 MB tmpfs (the tests run as root here; elsewhere this skips)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _job(job_id: str, destination: str) -> str:
    """40 MB of stdout, streamed to destination after the run."""
    fill = {"type": "parameter", "name": "--stdout-bytes", "value": str(40 * 1024 * 1024)}
    command = {"stdout": {"type": "uri", "value": destination}, "arguments": [fill]}
    return json.dumps({"id": job_id, "service": "tool", "command": command})


def test_a_full_destination_releases_the_job_as_disk_full(
    tmp_path: Path, small_disk: Path, worker_factory
) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    events, results = queue.sibling("events"), queue.sibling("results")
    queue.send(_job("too-big", f"file://{small_disk}/out.bin"))
    worker_factory(queue_url=queue.url, results_url=results.url, events_url=events.url).run()
    released = [json.loads(m.body) for m in events.receive(10, 0, 30)]
    [event] = [e for e in released if e["state"] == "released"]
    assert event["reason"] == "disk-full" and str(small_disk) in event["error"], event
    assert results.receive(10, 0, 30) == []  # no result: the job is not over
    assert queue.counts()["in_flight"] + queue.counts()["visible"] == 1  # still queued: nothing lost
    summary("disk-full-destination", 1, 1, 0, 0)


def test_a_worker_below_min_free_mb_stops_receiving_and_says_why(
    small_disk: Path, tmp_path: Path, worker_factory
) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * 20 * 1024 * 1024)  # 10 MB left of 30
    queue.send(json.dumps({"id": "waits", "service": "tool", "command": {"arguments": []}}))
    port = free_port()
    worker = worker_factory(
        queue_url=queue.url, results_url=results.url, work_root=small_disk / "work", min_free_mb=15,
        once=False, wait_time_s=1, metrics_port=port,
    )  # fmt: skip
    from lanworker.reporting.metrics import HealthServer, receive_loop_health

    health = HealthServer(
        port, worker.metrics, receive_loop_health(lambda: worker.last_receive_at, 120, worker.paused)
    )
    health.start()
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        time.sleep(2.5)
        assert queue.counts()["visible"] == 1  # not received
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert answer.status_code == 503 and "below --min-free-mb 15" in answer.json()["paused"]
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'lanworker_receiving_paused{reason="disk-full"} 1.0' in metrics
        filler.unlink()
        deadline = time.monotonic() + 30
        while not results.receive(1, 0, 30) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert time.monotonic() < deadline, "the job never ran after space came back"
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    finally:
        worker.request_shutdown()
        runner.join(timeout=30)
        health.stop()
    summary("min-free-mb", 1, 1, 0, 0)
