"""Every way a message leaves the queue for good ends its job in a final state (issue 19).

A workflow engine polls a task until it is final: a job the queue gives up on without a
final event is lost to it, however safely its message sits in a dead-letter queue.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from lanworker.queues import LocalQueue, SqsQueue
from tests.helpers.faults import summary
from tests.helpers.moto import free_port
from tests.helpers.processes import cli_env, run_cli


def _events(queue: LocalQueue | SqsQueue) -> list[dict[str, Any]]:
    found = []
    while True:
        batch = queue.receive(10, 0, 30)
        if not batch:
            return found
        for message in batch:
            found.append(json.loads(message.body))
            queue.delete(message)


def _unreachable_job(job_id: str) -> str:
    url = f"http://127.0.0.1:{free_port()}/input.txt"  # nothing listens: transient, forever
    argument = {"type": "input", "name": "--infile", "value": url}
    return json.dumps({"id": job_id, "service": "tool", "command": {"arguments": [argument]}})


def test_a_job_retried_until_the_last_receive_ends_dead_lettered(tmp_path: Path, worker_factory) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs", max_receives=2)
    events, results = queue.sibling("events"), queue.sibling("results")
    queue.send(_unreachable_job("never-reachable"))
    deadline = time.monotonic() + 60
    while not queue.list_dead_letters(10) and time.monotonic() < deadline:
        worker_factory(
            queue_url=queue.url, results_url=results.url, events_url=events.url, max_receives=2,
            retry_budget_s=1.0, allow_private_http=True,
        ).run()  # fmt: skip
        time.sleep(0.5)
    assert len(queue.list_dead_letters(10)) == 1
    seen = _events(events)
    final = [e for e in seen if e["state"] == "dead-lettered"]
    assert len(final) == 1 and final[0]["job_id"] == "never-reachable", seen
    assert "received 2 times" in final[0]["reason"] and "last error" in final[0]["reason"]
    [result] = [json.loads(m.body) for m in results.receive(10, 0, 30)]
    assert (result["state"], result["reason"]) == ("failed", "dead-lettered")
    summary("last-receive-local", 1, 1, 0, 0)


def test_a_worker_dying_on_the_last_receive_still_ends_the_job(tmp_path: Path, worker_factory) -> None:
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs", max_receives=2)
    events, results = queue.sibling("events"), queue.sibling("results")
    queue.send(json.dumps({"id": "died-twice", "service": "tool", "command": {"arguments": []}}))
    for _ in range(2):  # two workers took it and died: visibility 0 stands for their expiry
        assert queue.receive(1, 0, 0)
    worker_factory(queue_url=queue.url, results_url=results.url, events_url=events.url, max_receives=2).run()
    assert [letter.body for letter in queue.list_dead_letters(10)] == [
        json.dumps({"id": "died-twice", "service": "tool", "command": {"arguments": []}})
    ]
    final = [e for e in _events(events) if e["state"] == "dead-lettered"]
    assert [e["job_id"] for e in final] == ["died-twice"] and "received 2 times" in final[0]["reason"]
    summary("died-on-last-receive-local", 1, 1, 0, 0)


def test_an_sqs_message_past_max_receives_is_dead_lettered_with_a_final_event(
    sqs, queue_factory, worker_factory
) -> None:
    queue_url = queue_factory()
    dead_url = queue_factory()
    events_url = queue_factory()
    results_url = queue_factory()
    job_id = f"sqs-{uuid.uuid4().hex[:8]}"
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps({"id": job_id, "service": "tool", "command": {"arguments": []}}),
    )
    for _ in range(3):  # three workers died with it (no redrive policy on this queue)
        got = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=0, WaitTimeSeconds=1)
        assert got.get("Messages")
    worker_factory(
        queue_url=queue_url, dead_letter_queue_url=dead_url, events_url=events_url, results_url=results_url,
        max_receives=3,
    ).run()  # fmt: skip
    final = [e for e in _events(SqsQueue(events_url)) if e["state"] == "dead-lettered"]
    assert [e["job_id"] for e in final] == [job_id], final
    assert "received 4 times" in final[0]["reason"]
    dead = sqs.receive_message(QueueUrl=dead_url, WaitTimeSeconds=1).get("Messages", [])
    assert len(dead) == 1 and job_id in dead[0]["Body"]
    summary("died-on-last-receive-sqs", 1, 1, 0, 0)


def test_unusable_mounts_are_refused_by_the_api(tes_url: str) -> None:
    base = {"executors": [{"image": "lanworker-test/busybox:1", "command": ["true"]}]}
    for extra in (
        {"volumes": ["/a:/etc"]},
        {"volumes": ["/vol/" + "x" * 256]},
        {"volumes": ["/proc"]},
        {"volumes": ["/data"], "inputs": [{"content": "x", "path": "/data"}]},
        {"outputs": [{"url": "s3://b/k", "path": "/out/a:b"}]},
    ):
        response = requests.post(f"{tes_url}/ga4gh/tes/v1/tasks", json={**base, **extra}, timeout=10)
        assert response.status_code == 400, (extra, response.text)


def test_a_task_the_engine_cannot_start_fails_at_once(tes_url: str) -> None:
    """A volume beneath a read-only input file: the runtime cannot make its mount point
    ('not a directory'), on any attempt or worker."""
    task = {
        "inputs": [{"content": "x", "path": "/data/file"}],
        "volumes": ["/data/file/sub"],
        "executors": [{"image": "lanworker-test/busybox:1", "command": ["true"]}],
    }
    task_id = requests.post(f"{tes_url}/ga4gh/tes/v1/tasks", json=task, timeout=10).json()["id"]
    deadline = time.monotonic() + 90
    state = None
    while time.monotonic() < deadline:
        document = requests.get(f"{tes_url}/ga4gh/tes/v1/tasks/{task_id}?view=FULL", timeout=10).json()
        state = document["state"]
        if state in ("SYSTEM_ERROR", "EXECUTOR_ERROR", "COMPLETE"):
            break
        time.sleep(0.5)
    assert state == "SYSTEM_ERROR", document
    logs = " ".join(document["logs"][0].get("system_logs", []))
    assert "container failed to run" in logs or "container could not start" in logs, logs
    assert "times without completing" not in logs, logs  # failed at once, not retried out
    summary("cannot-start-tes", 1, 1, 0, 0)


def test_a_marker_left_from_an_earlier_job_does_not_cancel_a_new_one(tmp_path: Path, worker_factory) -> None:
    from lanworker.storage import Storage
    from lanworker.storage.control import request_cancel

    control = tmp_path / "control"
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")
    request_cancel(Storage(), str(control), "reused-id", "test")  # the earlier job's, never cleared
    time.sleep(0.05)
    queue.send(json.dumps({"id": "reused-id", "service": "tool", "command": {"arguments": []}}))
    worker_factory(queue_url=queue.url, results_url=results.url, control_url=str(control)).run()
    [result] = [json.loads(m.body) for m in results.receive(10, 0, 30)]
    assert result["state"] == "succeeded", result
    assert not (control / "cancel" / "reused-id").exists()  # the leftover is gone
    summary("stale-cancel-marker", 1, 1, 0, 0)


def test_a_cancel_before_the_job_starts_applies_and_is_removed(tmp_path: Path, worker_factory) -> None:
    control = tmp_path / "control"
    queue = LocalQueue(f"local:{tmp_path / 'q.db'}#jobs")
    results = queue.sibling("results")
    queue.send(json.dumps({"id": "queued-job", "service": "tool", "command": {"arguments": []}}))
    unknown = run_cli("cancel", "no-such-job", "--control", str(control), "--queue", queue.url, env=cli_env())
    assert unknown.returncode == 1 and "no job 'no-such-job' is queued or running" in unknown.stderr
    asked = run_cli("cancel", "queued-job", "--control", str(control), "--queue", queue.url, env=cli_env())
    assert asked.returncode == 0, asked.stderr
    worker_factory(queue_url=queue.url, results_url=results.url, control_url=str(control)).run()
    [result] = [json.loads(m.body) for m in results.receive(10, 0, 30)]
    assert (result["state"], result["error"]) == ("canceled", "canceled before it started")
    assert not (control / "cancel" / "queued-job").exists()
    summary("cancel-before-start", 1, 1, 0, 0)
