"""Workers killed, stopped and canceled mid-job, as real processes against moto_server."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from lanworker import cli
from lanworker.executors.native import job_process_groups
from lanworker.queues import SqsQueue
from tests.faults.conftest import collect_results, process_group_alive, tally, tool_job, wait_for_results
from tests.helpers.faults import summary
from tests.helpers.processes import cli_env, run_cli, wait_until


def records(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def visible_count(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def test_sigkill_mid_job_is_completed_by_another_worker(
    queue_factory, spawn_worker, tmp_path, work_root
) -> None:
    queue, results = queue_factory(), queue_factory()
    record = tmp_path / "executions"
    SqsQueue(queue).send(tool_job("killed-mid-job", ("--sleep", 4), ("--record", str(record))))
    first = spawn_worker(queue, "--visibility-timeout-s", "3", worker_id="first")
    wait_until(lambda: len(records(record)) == 1, what="the job to start on the first worker")
    [orphan] = job_process_groups(work_root / "first")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert process_group_alive(orphan), "the job outlives a SIGKILLed worker until someone cleans up"

    second = spawn_worker(queue, "--visibility-timeout-s", "3", "--results", results, worker_id="second")
    wait_until(lambda: not process_group_alive(orphan), what="the orphaned job to be killed at start-up")
    found = wait_for_results(results, ["killed-mid-job"], 60)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == cli.EXIT_STOPPED
    [result] = found["killed-mid-job"]
    assert result["state"] == "succeeded" and result["receive_count"] == 2
    assert records(record) == ["killed-mid-job", "killed-mid-job"]
    assert not any(work_root.glob("*/*")), "no job dir left"
    completed, lost, duplicates = tally(["killed-mid-job"], found)
    summary("sigkill-mid-job", 1, completed, lost, duplicates)
    assert lost == 0


def test_sigkill_mid_container_job_leaves_no_container(
    queue_factory, spawn_worker, work_root, busybox_image, docker_client
) -> None:
    queue, results = queue_factory(), queue_factory()
    SqsQueue(queue).send(
        json.dumps(
            {
                "id": "killed-container",
                "service": busybox_image,
                "command": {
                    "arguments": [
                        {"type": "parameter", "value": "sleep"},
                        {"type": "parameter", "value": "4"},
                    ]
                },
            }
        )
    )
    options = ("--visibility-timeout-s", "3", "--allow-image", "lanworker-test/*")
    first = spawn_worker(queue, *options, mode="docker", worker_id="first-docker")

    def containers() -> list[Any]:
        return list(
            docker_client.api.containers(all=True, filters={"label": "lanworker.job_id=killed-container"})
        )

    wait_until(lambda: bool(containers()), what="the container to start")
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert containers(), "the container outlives a SIGKILLed worker until someone cleans up"
    second = spawn_worker(queue, *options, "--results", results, mode="docker", worker_id="second-docker")
    found = wait_for_results(results, ["killed-container"], 60)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=30) == cli.EXIT_STOPPED
    [result] = found["killed-container"]
    assert result["state"] == "succeeded" and result["receive_count"] == 2
    assert containers() == []
    assert not any(work_root.glob("*/*")), "no job dir left"
    summary("sigkill-mid-container", 1, *tally(["killed-container"], found))


def test_sigterm_mid_job_releases_at_once(sqs, queue_factory, spawn_worker, tmp_path) -> None:
    queue, results = queue_factory(), queue_factory()
    record = tmp_path / "executions"
    SqsQueue(queue).send(tool_job("terminated-mid-job", ("--sleep", 30), ("--record", str(record))))
    busy = spawn_worker(queue, "--visibility-timeout-s", "600", "--grace-period-s", "1")
    wait_until(lambda: len(records(record)) == 1, what="the job to start")
    busy.send_signal(signal.SIGTERM)
    assert busy.wait(timeout=30) == cli.EXIT_STOPPED
    assert visible_count(sqs, queue) == 1, "released with visibility 0, not hidden for 600 s"

    finisher = spawn_worker(queue, "--results", results, "--once")
    assert finisher.wait(timeout=120) == 0
    found: dict[str, list[dict[str, Any]]] = {}
    collect_results(results, found)
    completed, lost, duplicates = tally(["terminated-mid-job"], found)
    summary("sigterm-mid-job", 1, completed, lost, duplicates)
    assert lost == 0 and found["terminated-mid-job"][0]["state"] == "succeeded"


def test_sigterm_during_long_poll_releases_what_the_poll_returns(
    sqs, queue_factory, spawn_worker, tmp_path
) -> None:
    queue = queue_factory()
    record = tmp_path / "executions"
    worker = spawn_worker(queue, "--wait-time-s", "20", "--visibility-timeout-s", "600")
    time.sleep(2)
    worker.send_signal(signal.SIGTERM)
    SqsQueue(queue).send(tool_job("arrives-after-signal", ("--record", str(record))))
    assert worker.wait(timeout=40) == cli.EXIT_STOPPED
    assert records(record) == [], "not started after the signal"
    assert visible_count(sqs, queue) == 1
    summary("sigterm-long-poll", 1, 1, 0, 0)


def test_job_longer_than_visibility_timeout_runs_once(queue_factory, spawn_worker, tmp_path) -> None:
    queue, results = queue_factory(), queue_factory()
    record = tmp_path / "executions"
    SqsQueue(queue).send(tool_job("long-job", ("--sleep", 10), ("--record", str(record))))
    workers = [spawn_worker(queue, "--visibility-timeout-s", "3", "--results", results) for _ in range(2)]
    found = wait_for_results(results, ["long-job"], 60)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    [result] = found["long-job"]
    assert result["state"] == "succeeded" and result["receive_count"] == 1
    assert records(record) == ["long-job"]
    summary("job-longer-than-visibility", 1, *tally(["long-job"], found))


@pytest.mark.parametrize("executor", ["native", "docker"])
def test_cancel_a_running_job(executor, queue_factory, spawn_worker, tmp_path, request) -> None:
    queue, results = queue_factory(), queue_factory()
    control = tmp_path / "control"
    extra: list[str] = [
        "--control",
        str(control),
        "--results",
        results,
    ]  # default intervals: 2 s cancel checks
    if executor == "docker":
        image = request.getfixturevalue("busybox_image")
        message = json.dumps(
            {
                "id": "cancel-me",
                "service": image,
                "command": {
                    "arguments": [
                        {"type": "parameter", "value": "sleep"},
                        {"type": "parameter", "value": "60"},
                    ]
                },
            }
        )
        extra += ["--allow-image", "lanworker-test/*"]
    else:
        record = tmp_path / "executions"
        message = tool_job("cancel-me", ("--sleep", 60), ("--record", str(record)))
    SqsQueue(queue).send(message)
    worker = spawn_worker(queue, *extra, mode=executor)
    if executor == "docker":
        docker_client = request.getfixturevalue("docker_client")
        running = lambda: docker_client.api.containers(filters={"label": "lanworker.job_id=cancel-me"})  # noqa: E731
        wait_until(lambda: bool(running()), what="the container to start")
    else:
        wait_until(lambda: len(records(record)) == 1, what="the job to start")
    asked = time.monotonic()
    completed_cli = run_cli("cancel", "cancel-me", "--control", str(control), env=cli_env())
    assert completed_cli.returncode == 0
    found = wait_for_results(results, ["cancel-me"], 30)
    took = time.monotonic() - asked
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == cli.EXIT_STOPPED
    [result] = found["cancel-me"]
    assert result["state"] == "canceled", result
    assert took < 15, f"stopped {took:.1f} s after the request"
    if executor == "docker":
        assert docker_client.api.containers(all=True, filters={"label": "lanworker.job_id=cancel-me"}) == []
    assert not (control / "cancel" / "cancel-me").exists()
    summary(f"cancel-{executor}", 1, *tally(["cancel-me"], found))


def test_soak_with_a_worker_killed_and_restarted(
    queue_factory, spawn_worker, s3, bucket_factory, work_root
) -> None:
    queue, results = queue_factory(), queue_factory()
    bucket = bucket_factory()
    s3.put_object(Bucket=bucket, Key="soak/input.txt", Body=b"soak input\n")
    rng = random.Random(7)
    job_ids, bodies = [], []
    for index in range(200):
        job_id = f"soak-{index:03d}"
        job_ids.append(job_id)
        kind = rng.random()
        if kind < 0.7:
            bodies.append(tool_job(job_id, ("--sleep", round(rng.uniform(0.1, 0.8), 2))))
        elif kind < 0.85:
            bodies.append(tool_job(job_id, ("--exit", 2)))
        else:
            bodies.append(
                json.dumps(
                    {
                        "id": job_id,
                        "service": "tool",
                        "command": {
                            "arguments": [
                                {
                                    "type": "input",
                                    "name": "--infile",
                                    "value": f"s3://{bucket}/soak/input.txt",
                                },
                                {
                                    "type": "output",
                                    "name": "--outfile",
                                    "value": f"s3://{bucket}/soak/out/{job_id}.txt",
                                },
                            ]
                        },
                    }
                )
            )
    sender = SqsQueue(queue)
    for body in bodies:
        sender.send(body)

    options = ("--visibility-timeout-s", "4", "--concurrency", "2", "--results", results)
    workers: list[subprocess.Popen[bytes]] = [spawn_worker(queue, *options) for _ in range(3)]
    found: dict[str, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 300
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(4)
        collect_results(results, found)
        if tally(job_ids, found)[1] == 0:
            break
        victim = kills % len(workers)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        workers[victim] = spawn_worker(queue, *options)
        kills += 1
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.wait(timeout=60)
    collect_results(results, found)
    completed, lost, duplicates = tally(job_ids, found)
    summary(f"soak-{kills}-kills", len(job_ids), completed, lost, duplicates)
    assert lost == 0
    failed = {job for job, results_of in found.items() if results_of[-1]["state"] == "failed"}
    expected = {job for job, body in zip(job_ids, bodies, strict=True) if '"--exit"' in body}
    why = {
        job: [
            {key: result.get(key) for key in ("state", "reason", "error", "exit_code")}
            for result in found[job]
        ]
        for job in failed - expected
    }
    assert failed == expected, f"failed unexpectedly: {why}; did not fail: {sorted(expected - failed)}"
    assert not any(work_root.glob("*/*")), "no job dir left"
