"""The worker's decisions, driven through the shipped fakes: what happens to each message."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lanworker.core.errors import CannotStart, InvalidMessage, TransientError
from lanworker.core.stops import StopReason
from lanworker.executors.base import ExecutionRequest, ExecutionResult, JobTerms
from lanworker.testing import ScriptedExecutor, fake_worker, wait_for_stop


def message(**extra: Any) -> str:
    document: dict[str, Any] = {
        "service": "tool",
        "command": {"arguments": [{"type": "parameter", "value": "x"}]},
    }
    document.update(extra)
    return json.dumps(document)


@pytest.fixture(autouse=True, params=[False, True], ids=["embedded-settling", "settler-thread"])
def remote(request: pytest.FixtureRequest) -> bool:
    """Every decision holds whether the job's thread settles it (embedded queue) or the
    settler thread does, in batches (SQS)."""
    global REMOTE
    REMOTE = request.param
    return REMOTE


REMOTE = False


def run_one(work_root: Path, body: str, executor: ScriptedExecutor | None = None, **flags: Any):
    fake = fake_worker(work_root, executor, remote=REMOTE, **flags)
    message_id = fake.queue.send(body)
    fake.run()
    return fake, message_id


def test_success_is_reported_then_deleted(work_root: Path) -> None:
    fake, message_id = run_one(work_root, message(id="job-1"))
    [result] = fake.result_documents()
    assert (result["job_id"], result["state"], result["exit_code"]) == ("job-1", "succeeded", 0)
    assert fake.queue.ops(message_id) == ["send", "receive", "delete"]


def test_a_failing_command_is_reported_failed_and_deleted(work_root: Path) -> None:
    fake, message_id = run_one(work_root, message(), ScriptedExecutor([ExecutionResult(exit_code=3)]))
    [result] = fake.result_documents()
    assert (result["state"], result["reason"], result["exit_code"]) == ("failed", "exit-code", 3)
    assert fake.queue.ops(message_id)[-1] == "delete"


def test_an_oom_kill_is_its_own_reason(work_root: Path) -> None:
    executor = ScriptedExecutor([ExecutionResult(exit_code=137, oom_killed=True)])
    fake, _ = run_one(work_root, message(), executor)
    assert fake.result_documents()[0]["reason"] == "oom"


@pytest.mark.parametrize(
    "limit_mb, text", [(512, "most often its memory limit (512 MB)"), (None, "code 137")]
)
def test_a_sigkill_names_the_memory_limit_only_under_one(work_root: Path, limit_mb, text: str) -> None:
    executor = ScriptedExecutor([ExecutionResult(exit_code=137, memory_limit_mb=limit_mb)])
    fake, _ = run_one(work_root, message(), executor)
    [result] = fake.result_documents()
    assert (result["reason"], result["exit_code"]) == ("exit-code", 137)
    assert text in result["error"] and ("memory" in result["error"]) == (limit_mb is not None)


@pytest.mark.parametrize(
    "body",
    ["not json", message(service=""), message(id="bad id\n"), '{"service": "x", "command": {"a": NaN}}'],
)
def test_invalid_messages_are_dead_lettered_at_once(work_root: Path, body: str) -> None:
    fake, message_id = run_one(work_root, body)
    assert fake.queue.ops(message_id) == ["send", "receive", "dead-letter"]
    [result] = fake.result_documents()
    assert result["reason"] == "invalid-message"
    assert result["job_id"] == message_id  # an id that is not well-formed is never used


def test_a_command_that_cannot_start_is_dead_lettered(work_root: Path) -> None:
    executor = ScriptedExecutor([CannotStart("no such program")])
    fake, message_id = run_one(work_root, message(), executor)
    assert fake.queue.ops(message_id)[-1] == "dead-letter"
    assert fake.result_documents()[0]["reason"] == "cannot-start"


def test_an_executor_refusal_is_an_invalid_message(work_root: Path) -> None:
    executor = ScriptedExecutor(refuse=InvalidMessage("image 'evil' is not allowed"))
    fake, message_id = run_one(work_root, message(), executor)
    assert fake.queue.ops(message_id)[-1] == "dead-letter"
    assert "not allowed" in fake.queue.dead_letters[0].reason


def test_transient_trouble_releases_with_a_backoff(work_root: Path) -> None:
    executor = ScriptedExecutor([TransientError("engine unreachable")])
    fake, message_id = run_one(work_root, message(), executor)
    assert fake.queue.ops(message_id)[-1] == "release"
    assert fake.result_documents() == []
    assert fake.queue.messages[message_id].visible_at > time.monotonic() + 3  # not at once


def test_a_retry_policy_requeues_before_deleting(work_root: Path) -> None:
    body = message(id="job-r", retry={"attempts": 2, "on_exit_codes": [3]})
    fake, message_id = run_one(work_root, body, ScriptedExecutor([ExecutionResult(exit_code=3)]))
    first, second = fake.result_documents()
    assert (first["state"], first["next_attempt"], first["attempt"]) == ("retrying", 2, 1)
    assert (second["job_id"], second["state"], second["attempt"]) == ("job-r", "succeeded", 2)
    assert fake.queue.ops(message_id) == ["send", "receive", "delete"]


def test_a_retry_keeps_the_message_group_and_attributes(work_root: Path) -> None:
    """On a FIFO queue a retry in a group of the worker's own would wait behind every
    other retry of the fleet, and lose the sender's order."""
    fake = fake_worker(work_root, ScriptedExecutor([ExecutionResult(exit_code=3)]), remote=REMOTE)
    body = message(id="job-g", retry={"attempts": 2, "on_exit_codes": [3]})
    fake.queue.send(body, {"trace-id": "t-1"}, group_id="tenant-7")
    fake.run()
    assert [r["state"] for r in fake.result_documents()] == ["retrying", "succeeded"]
    sent = [(stored.attributes, stored.group_id) for stored in fake.queue.sent.values()]
    assert sent == [({"trace-id": "t-1"}, "tenant-7")] * 2  # the message, then its retry


def test_timeout_covers_the_run_and_fails_the_job(work_root: Path) -> None:
    executor = ScriptedExecutor(script=wait_for_stop)
    fake, _ = run_one(work_root, message(timeout_s=0.2), executor)
    [result] = fake.result_documents()
    assert (result["state"], result["reason"]) == ("failed", "timeout")


def test_a_service_timeout_applies_when_the_message_has_none(work_root: Path) -> None:
    executor = ScriptedExecutor(script=wait_for_stop, terms=JobTerms(timeout_s=0.2))
    fake, _ = run_one(work_root, message(), executor)
    assert fake.result_documents()[0]["reason"] == "timeout"


def test_a_cancel_marker_stops_a_running_job(work_root: Path, tmp_path: Path) -> None:
    control = tmp_path / "control"

    def cancel_then_wait(request: ExecutionRequest) -> ExecutionResult:
        (control / "cancel").mkdir(parents=True)
        (control / "cancel" / request.job_id).write_text("{}")
        return wait_for_stop(request)

    executor = ScriptedExecutor(script=cancel_then_wait)
    fake, message_id = run_one(
        work_root, message(id="job-c"), executor, control_url=str(control), heartbeat_interval_s=0.1
    )
    [result] = fake.result_documents()
    assert (result["state"], result["reason"]) == ("canceled", "canceled")
    assert fake.queue.ops(message_id)[-1] == "delete"
    assert not (control / "cancel" / "job-c").exists()


def test_shutdown_with_free_slots_in_once_mode_releases_the_running_job(work_root: Path) -> None:
    started = threading.Event()

    def long_command(request: ExecutionRequest) -> ExecutionResult:
        started.set()
        return wait_for_stop(request, limit_s=30)

    fake = fake_worker(
        work_root, ScriptedExecutor(script=long_command), remote=REMOTE, concurrency=2, grace_period_s=0.2
    )
    message_id = fake.queue.send(message())
    runner = threading.Thread(target=fake.run)
    runner.start()
    assert started.wait(10)
    began = time.monotonic()
    fake.worker.request_shutdown()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert time.monotonic() - began < 5  # the grace period, not the job's 30 s
    assert fake.queue.ops(message_id)[-1] == "release"
    assert fake.result_documents() == []


def test_a_lost_lease_leaves_the_message_alone(work_root: Path) -> None:
    def steal(request: ExecutionRequest) -> ExecutionResult:
        stored = fake.queue.messages[request.job_id]
        stored.receipt = "someone-else"  # another worker received it
        return wait_for_stop(request, limit_s=10)

    fake = fake_worker(work_root, ScriptedExecutor(script=steal), remote=REMOTE, heartbeat_interval_s=0.05)
    message_id = fake.queue.send(message())
    fake.run()
    # Heartbeats may extend the lease before the steal (a loaded machine starts the command
    # late); after it, nothing touches the message: no delete, release or dead letter.
    assert [op for op in fake.queue.ops(message_id) if op != "extend"] == ["send", "receive"]
    assert fake.result_documents() == []


def test_a_result_that_cannot_be_delivered_releases_the_message(work_root: Path) -> None:
    fake = fake_worker(work_root, remote=REMOTE)
    message_id = fake.queue.send(message())

    def broken_send(*args: object, **kwargs: object) -> str:
        raise TransientError("results queue unreachable")

    fake.results.send = broken_send  # type: ignore[method-assign]
    fake.run()
    assert fake.queue.ops(message_id)[-1] == "release"


def test_results_delivered_together_stand_or_fall_alone(work_root: Path) -> None:
    """Results settled together go out as one batch; the one the batch could not deliver
    releases its own message, and only that one."""
    fake = fake_worker(work_root, remote=REMOTE, concurrency=4)
    ids = [fake.queue.send(message(id=f"job-{n}")) for n in range(12)]
    real_send = fake.results.send

    def send(body: str, *args: Any, **kwargs: Any) -> str:
        if json.loads(body)["job_id"] == "job-5":
            raise TransientError("throttled")
        return real_send(body, *args, **kwargs)

    fake.results.send = send  # type: ignore[method-assign]
    fake.run()
    assert fake.queue.ops(ids[5])[:3] == ["send", "receive", "release"]
    assert "delete" not in fake.queue.ops(ids[5])
    assert all(fake.queue.ops(i) == ["send", "receive", "delete"] for n, i in enumerate(ids) if n != 5)
    assert sorted(r["job_id"] for r in fake.result_documents()) == sorted(
        f"job-{n}" for n in range(12) if n != 5
    )


def test_a_result_too_large_for_its_queue_is_cut_to_fit_and_delivered(work_root: Path) -> None:
    def chatty(request: ExecutionRequest) -> ExecutionResult:
        request.stdout.write(b"x" * 200_000)
        return ExecutionResult(exit_code=0)

    fake = fake_worker(work_root, ScriptedExecutor(script=chatty), remote=REMOTE)
    fake.results.max_bytes = 16 * 1024
    message_id = fake.queue.send(message(id="chatty", command={"stdout": {"type": "pipe"}, "arguments": []}))
    fake.run()
    [result] = fake.result_documents()
    assert result["cut"] == ["stdout"] and result["stdout"]["bytes"] == 200_000
    assert fake.queue.ops(message_id) == ["send", "receive", "delete"]


def test_stop_reasons_that_fail_a_job() -> None:
    assert {reason for reason in StopReason if reason.fails_job} == {
        StopReason.TIMEOUT,
        StopReason.MAX_RUNTIME,
        StopReason.DISK_LIMIT,
    }


def test_a_prefetched_message_waiting_at_shutdown_is_released_never_run(work_root: Path) -> None:
    """From a remote queue short jobs get a message prefetched per slot; one still
    waiting when shutdown is requested goes back to the queue without running."""
    if not REMOTE:
        pytest.skip("the embedded queue prefetches nothing: its slots receive for themselves")
    second_started, let_go = threading.Event(), threading.Event()

    def script(request: ExecutionRequest) -> ExecutionResult:
        if len(fake.executor.requests) == 2:
            second_started.set()
            let_go.wait(10)
        return ExecutionResult(exit_code=0)

    fake = fake_worker(work_root, ScriptedExecutor(script=script), remote=REMOTE, once=False, concurrency=1)
    ids = [fake.queue.send(message(id=f"job-{n}")) for n in range(4)]
    runner = threading.Thread(target=fake.run)
    runner.start()
    assert second_started.wait(10)
    waiting = [i for i in ids[2:] if fake.queue.ops(i)[-1:] == ["receive"]]
    deadline = time.monotonic() + 5
    while not waiting and time.monotonic() < deadline:  # the loop tops up its prefetch
        time.sleep(0.01)
        waiting = [i for i in ids[2:] if fake.queue.ops(i)[-1:] == ["receive"]]
    assert waiting, "a short job's slot holds one prefetched message"
    fake.worker.request_shutdown()
    let_go.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert len(fake.executor.requests) == 2
    assert [fake.queue.ops(i)[-1] for i in ids[:2]] == ["delete", "delete"]
    assert all(fake.queue.ops(i)[-1] == "release" for i in waiting)
    assert sorted(r["job_id"] for r in fake.result_documents()) == ["job-0", "job-1"]


def test_an_embedded_slot_takes_its_next_message_itself_until_shutdown(work_root: Path) -> None:
    """On the embedded queue a slot that finished a job receives the next one itself,
    nothing waits received behind a running job, and after a shutdown request the slot
    receives nothing more."""
    if REMOTE:
        pytest.skip("a remote queue's messages are received by the loop, in batches")
    received_while_running: list[list[str]] = []

    def script(request: ExecutionRequest) -> ExecutionResult:
        received_while_running.append([i for i in ids if fake.queue.ops(i)[-1:] == ["receive"]])
        if len(fake.executor.requests) == 3:
            fake.worker.request_shutdown()
        return ExecutionResult(exit_code=0)

    fake = fake_worker(work_root, ScriptedExecutor(script=script), once=False, concurrency=1)
    ids = [fake.queue.send(message(id=f"job-{n}")) for n in range(6)]
    runner = threading.Thread(target=fake.run)
    runner.start()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert received_while_running == [[ids[0]], [ids[1]], [ids[2]]]
    assert [fake.queue.ops(i) for i in ids[:3]] == [["send", "receive", "delete"]] * 3
    assert [fake.queue.ops(i) for i in ids[3:]] == [["send"]] * 3


def test_many_jobs_are_each_reported_then_deleted_once(work_root: Path) -> None:
    fake = fake_worker(work_root, remote=REMOTE, concurrency=4)
    ids = [fake.queue.send(message(id=f"job-{n}")) for n in range(40)]
    fake.run()
    assert all(fake.queue.ops(i) == ["send", "receive", "delete"] for i in ids)
    assert sorted(r["job_id"] for r in fake.result_documents()) == sorted(f"job-{n}" for n in range(40))


def test_a_worker_can_run_again_after_a_run_ends(work_root: Path) -> None:
    fake = fake_worker(work_root, remote=REMOTE)
    first = fake.queue.send(message(id="first"))
    fake.run()
    second = fake.queue.send(message(id="second"))
    fake.run()
    assert fake.queue.ops(first)[-1] == fake.queue.ops(second)[-1] == "delete"
