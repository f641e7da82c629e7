"""Leases on the embedded queue: max runtime, a stolen message, cancel before start, --keep-workdir."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from lanworker.queues import LocalQueue
from tests.helpers.processes import wait_until


def sleep_job(job_id: str, seconds: float) -> str:
    return json.dumps(
        {
            "id": job_id,
            "service": "tool",
            "command": {"arguments": [{"type": "parameter", "name": "--sleep", "value": seconds}]},
        }
    )


def results_of(queue: LocalQueue) -> list[dict]:
    results = queue.sibling("results")
    found = []
    while batch := results.receive(10, 0, 30):
        for message in batch:
            found.append(json.loads(message.body))
            results.delete(message)
    return found


def test_max_job_runtime_stops_a_job(local_queue_factory, worker_factory) -> None:
    queue = local_queue_factory()
    queue.send(sleep_job("too-long", 30))
    started = time.monotonic()
    worker_factory(
        queue_url=queue.url,
        results_url=queue.sibling("results").url,
        max_job_runtime_s=2.0,
        heartbeat_interval_s=0.5,
    ).run()
    [result] = results_of(queue)
    assert (result["state"], result["reason"]) == ("failed", "max-runtime")
    assert time.monotonic() - started < 20


def test_a_stolen_message_is_neither_uploaded_nor_deleted(
    local_queue_factory, worker_factory, tmp_path
) -> None:
    queue = local_queue_factory()
    out = tmp_path / "must-not-exist.txt"
    queue.send(
        json.dumps(
            {
                "id": "stolen",
                "service": "tool",
                "command": {
                    "arguments": [
                        {"type": "parameter", "name": "--sleep", "value": 3},
                        {"type": "output", "name": "--outdir", "value": str(tmp_path / "outdir") + "/"},
                    ]
                },
            }
        )
    )
    thief = local_queue_factory()
    worker = worker_factory(
        queue_url=queue.url,
        results_url=queue.sibling("results").url,
        visibility_timeout_s=30,
        heartbeat_interval_s=0.5,
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    wait_until(lambda: queue.counts()["in_flight"] == 1, what="the job to start")
    # Another consumer takes the message (as after an expired visibility): our receipt is stale.
    with thief._transaction() as db:
        db.execute("UPDATE messages SET visible_at = 0")
    [stolen] = thief.receive(1, 0, 300)
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert results_of(queue) == [], "no result reported with a stale receipt"
    assert not (tmp_path / "outdir").exists() and not out.exists(), "nothing uploaded"
    thief.delete(stolen)  # the thief's receipt is the valid one


def test_cancel_before_start_reports_without_running(local_queue_factory, worker_factory, tmp_path) -> None:
    queue = local_queue_factory()
    control = tmp_path / "control"
    (control / "cancel").mkdir(parents=True)
    (control / "cancel" / "queued-job").write_text("{}")
    record = tmp_path / "ran"
    queue.send(
        json.dumps(
            {
                "id": "queued-job",
                "service": "tool",
                "command": {"arguments": [{"type": "parameter", "name": "--record", "value": str(record)}]},
            }
        )
    )
    worker_factory(
        queue_url=queue.url, results_url=queue.sibling("results").url, control_url=str(control)
    ).run()
    [result] = results_of(queue)
    assert result["state"] == "canceled" and not record.exists()
    assert not (control / "cancel" / "queued-job").exists()


def test_keep_workdir_keeps_the_job_dir(local_queue_factory, worker_factory, work_root: Path) -> None:
    queue = local_queue_factory()
    queue.send(sleep_job("kept", 0))
    worker = worker_factory(queue_url=queue.url, keep_workdir=True, worker_id="keeper")
    worker.run()
    kept = list((work_root / "keeper").glob("kept-*"))
    assert len(kept) == 1 and not any(kept[0].iterdir())  # the job had no files: no in/ or out/
