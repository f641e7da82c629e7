"""Decide: what a job's end means for its message, as an Outcome (`core.outcomes`).

The pipeline never touches the queue. Every way a job can end - success, a failing
command, a stop, a refused or poison message, an infrastructure failure, a last receive -
is turned here into Delete, DeadLetter, Release or Abandon with the result and the state
event that go with it; `loop.settle` carries it out.
"""

from __future__ import annotations

import json
import logging
import platform

from lanworker import __version__
from lanworker.core.errors import CannotStart, Interrupted, InvalidMessage, JobFailed, TransientError
from lanworker.core.outcomes import (
    TRANSIENT_BACKOFF_S,
    Abandon,
    DeadLetter,
    Delete,
    Outcome,
    Release,
    Requeue,
)
from lanworker.core.states import EventState, JobState
from lanworker.core.stops import StopReason
from lanworker.executors.base import EXIT_SIGKILL, ExecutionResult
from lanworker.pipeline.context import Admitted, JobContext, JobTools
from lanworker.queues.base import exhausted_reason

logger = logging.getLogger(__name__)

STOP_TEXT = {
    StopReason.TIMEOUT: "job exceeded its timeout and was stopped",
    StopReason.MAX_RUNTIME: "job exceeded --max-job-runtime-s and was stopped",
    StopReason.DISK_LIMIT: "job dir grew beyond --max-job-disk-mb and the job was stopped",
}


def ran_to_success(job: JobContext, execution: ExecutionResult) -> bool:
    """Whether the command succeeded. A stop that is not the job's fault (shutdown, a lost
    lease) raises Interrupted: the message goes back, nothing is reported."""
    stop = execution.stop_reason
    if stop is not None and not stop.fails_job:
        raise Interrupted(stop)
    still_leased(job)
    return execution.exit_code == 0 and stop is None


def still_leased(job: JobContext) -> None:
    """After the lease is lost another worker may hold the message: report nothing."""
    if job.watch.lease() is StopReason.LEASE_LOST:
        raise Interrupted(StopReason.LEASE_LOST)


def verdict(job: JobContext, execution: ExecutionResult, succeeded: bool) -> Outcome:
    result = job.result
    if succeeded:
        result.state = JobState.SUCCEEDED
    else:
        stop = execution.stop_reason
        result.reason = stop.value if stop else ("oom" if execution.oom_killed else "exit-code")
        result.error = failure_text(job, execution)
    return finish(job)


def failure_text(job: JobContext, execution: ExecutionResult) -> str:
    stop = execution.stop_reason
    if stop is StopReason.TIMEOUT:
        timeout = job.message.timeout_s or job.tools.config.default_timeout_s or "its"
        return f"job exceeded its timeout ({timeout} s) and was stopped"
    if stop is not None:
        return STOP_TEXT[stop]
    if execution.oom_killed:
        return f"command was killed for exceeding its memory limit (exit code {execution.exit_code})"
    if execution.exit_code == EXIT_SIGKILL and execution.memory_limit_mb is not None:
        # The engine can miss an OOM kill of a container that exits at once after it.
        return (
            f"command was killed by SIGKILL (exit code {EXIT_SIGKILL}): most often its memory limit "
            f"({execution.memory_limit_mb} MB), though no OOM kill was recorded"
        )
    return f"command exited with code {execution.exit_code}"


def finish(job: JobContext) -> Outcome:
    """A succeeded or failed job; a failure matching the retry policy is re-queued."""
    message, result, events = job.message, job.result, job.tools.events
    policy = message.retry
    retryable = result.state is JobState.FAILED and policy is not None and message.attempt < policy.attempts
    if retryable and policy and (not policy.on_exit_codes or result.exit_code in policy.on_exit_codes):
        document = dict(message.raw, id=job.job_id, attempt=message.attempt + 1)
        result.state = JobState.RETRYING
        result.extra["next_attempt"] = message.attempt + 1
        events.publish(
            job.job_id, EventState.RETRYING, attempt=message.attempt, next_attempt=message.attempt + 1
        )
        return Delete(result, message.reply_to, Requeue(json.dumps(document), int(policy.delay_s)))
    events.publish(
        job.job_id,
        EventState(result.state.value),
        exit_code=result.exit_code,
        reason=result.reason,
        result=result.summary(),
    )
    return Delete(result, message.reply_to)


def stopped(job: JobContext, reason: StopReason) -> Outcome:
    result = job.result
    if reason is StopReason.LEASE_LOST:
        logger.warning(
            "lost its message lease; leaving the message for redelivery",
            extra={"job_id": job.job_id, "action": "abandon"},
        )
        return Abandon()
    if reason is StopReason.CANCELED:
        result.state, result.reason, result.error = JobState.CANCELED, "canceled", "canceled while running"
        job.tools.events.publish(job.job_id, EventState.CANCELED, reason="canceled", result=result.summary())
        return Delete(result, job.message.reply_to)
    if reason.fails_job:
        result.reason, result.error = reason.value, STOP_TEXT[reason]
        return finish(job)
    job.tools.events.publish(job.job_id, EventState.RELEASED, reason=reason.value)
    return Release()


def rejected(job: JobContext, exc: InvalidMessage) -> DeadLetter:
    """Found invalid only while staging (an unsafe key, a bad bucket name)."""
    logger.error("rejected: %s", exc, extra={"job_id": job.job_id, "action": "invalid"})
    job.result.reason, job.result.error = "invalid-message", str(exc)
    return DeadLetter(job.result, job.message.reply_to)


def failed(job: JobContext, exc: JobFailed) -> Outcome:
    logger.error("failed: %s", exc, extra={"job_id": job.job_id, "action": "failed"})
    job.result.reason, job.result.error = exc.reason, str(exc)
    if isinstance(exc, CannotStart):
        # It will not start on any attempt: a poison message, kept whole for a human.
        return DeadLetter(job.result, job.message.reply_to)
    return finish(job)


def released(job_id: str, exc: TransientError, tools: JobTools) -> Release:
    logger.warning(
        "transient failure (%s), releasing the message for redelivery: %s",
        exc.kind,
        exc,
        extra={"job_id": job_id, "action": "released"},
    )
    tools.events.publish(job_id, EventState.RELEASED, reason=exc.kind, error=str(exc))
    return Release(error=f"{exc.kind}: {exc}", delay_s=TRANSIENT_BACKOFF_S)


def exhausted(admitted: Admitted, tools: JobTools, last_error: str | None) -> DeadLetter:
    """A message on or past its last receive: dead-lettered here with a final result and
    event, where the queue would drop it without a word and its status never resolve."""
    error = exhausted_reason(admitted.received.receive_count, tools.config.max_receives, last_error)
    logger.error("dead-lettered: %s", error, extra={"job_id": admitted.job_id, "action": "dead-letter"})
    result = admitted.result(tools, JobState.FAILED, reason="dead-lettered", error=error)
    return DeadLetter(result, admitted.message.reply_to)


def canceled_before_start(admitted: Admitted, tools: JobTools) -> Delete:
    result = admitted.result(tools, JobState.CANCELED, reason="canceled", error="canceled before it started")
    return Delete(result, admitted.message.reply_to)


def listening(admitted: Admitted, tools: JobTools) -> Delete:
    """The answer to a test message: who listens, and how it would run a job."""
    extra = {
        "queue": admitted.message.queue,
        "executor": tools.executor.kind,
        "version": __version__,
        "host": platform.node(),
    }
    return Delete(admitted.result(tools, JobState.LISTENING, extra=extra), admitted.message.reply_to)
