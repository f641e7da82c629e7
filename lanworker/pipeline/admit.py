"""Admit: decode the message, read the job id and reply queue, parse it against the schema,
and ask the executor and the worker's policy whether it may run here.

A message that fails admission is never run: it becomes a dead letter with a result that
names every problem, sent to its sender when its `reply_to` is well-formed and allowed.
"""

from __future__ import annotations

import logging
from typing import Any

from lanworker.core.errors import InvalidMessage
from lanworker.core.logs import current_job
from lanworker.core.outcomes import DeadLetter, JobResult
from lanworker.core.states import JobState
from lanworker.message.command import decode, from_document, well_formed_id
from lanworker.message.policy import MessagePolicy
from lanworker.pipeline.context import Admitted, JobTools
from lanworker.queues import ReceivedMessage

logger = logging.getLogger(__name__)


def admit(received: ReceivedMessage, tools: JobTools, policy: MessagePolicy) -> Admitted | DeadLetter:
    job_id = received.message_id
    current_job.set(job_id)
    reply_to: str | None = None
    document: Any = None
    try:
        document = decode(received.body)
        if not isinstance(document, dict):
            raise InvalidMessage(f"message must be a JSON object, got {type(document).__name__}")
        # Known before validation, so that even an invalid message's result finds its
        # sender; both are used only when they are well-formed and allowed.
        job_id = well_formed_id(document.get("id")) or job_id
        current_job.set(job_id)
        reply_to = _usable_reply_to(document.get("reply_to"), policy)
        message = from_document(document)
        terms = tools.executor.check_message(message)
        problems = policy.problems(message, terms.allow_env)
        if problems:
            raise InvalidMessage(
                "message asks for what this worker refuses: " + "; ".join(problems), problems
            )
    except InvalidMessage as exc:
        return DeadLetter(_refused(exc, job_id, document, received, tools), reply_to)
    return Admitted(job_id, message, terms, received)


def _refused(
    exc: InvalidMessage, job_id: str, document: Any, received: ReceivedMessage, tools: JobTools
) -> JobResult:
    where = "" if job_id == received.message_id else f" (message {received.message_id})"
    logger.error("invalid message%s: %s", where, exc, extra={"job_id": job_id, "action": "invalid"})
    service = document.get("service") if isinstance(document, dict) else None
    return JobResult(
        job_id=job_id,
        service=service if isinstance(service, str) else None,  # whatever could be read is kept
        state=JobState.FAILED,
        worker_id=tools.config.worker_id,
        reason="invalid-message",
        error=str(exc),
        extra={"errors": exc.details} if exc.details else {},
    )


def _usable_reply_to(value: Any, policy: MessagePolicy) -> str | None:
    if not isinstance(value, str) or policy.reply_to_problem(value) is not None:
        return None
    return value
