"""Where job results and job state events go: a reply queue, a results queue, SNS, the log."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import botocore.session

from lanworker.errors import TransientError
from lanworker.queues import QueueCache
from lanworker.retries import Backoff, as_transient, is_transient

logger = logging.getLogger(__name__)

EVENT_BACKOFF = Backoff(attempts=3, budget_s=10.0)  # events are advisory: never hold a job up long


@dataclass
class JobResult:
    job_id: str
    service: str | None
    state: str  # succeeded | failed | canceled | listening | retrying
    worker_id: str
    attempt: int = 1
    receive_count: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    error: str | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    stdout: dict[str, Any] | None = None
    stderr: dict[str, Any] | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    finished_at: float = field(default_factory=time.time)

    def summary(self, text_bytes: int = 8 * 1024) -> dict[str, Any]:
        """The result for a state event: stream texts cut to their last text_bytes, so the
        event stays far below a queue's message size limit."""
        document = self.as_dict()
        for name in ("stdout", "stderr"):
            stream = document.get(name)
            if isinstance(stream, dict) and isinstance(stream.get("text"), str):
                document[name] = {**stream, "text": stream["text"][-text_bytes:]}
        return document

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "job_id": self.job_id,
            "service": self.service,
            "state": self.state,
            "worker_id": self.worker_id,
            "attempt": self.attempt,
            "receive_count": self.receive_count,
            "exit_code": self.exit_code,
            "reason": self.reason,
            "error": self.error,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
            "stdout": self.stdout,
            "stderr": self.stderr,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "finished_at": self.finished_at,
        }
        document.update(self.extra)
        return document


class ResultReporter:
    def __init__(self, results_url: str | None, queues: QueueCache) -> None:
        self.results_url = results_url
        self.queues = queues

    def report(self, result: JobResult, reply_to: str | None) -> None:
        """Log the result, then deliver it; raises TransientError if delivery failed."""
        document = result.as_dict()
        logger.info(
            "job %s %s%s",
            result.job_id,
            result.state,
            f": {result.error}" if result.error else "",
            extra={"job_id": result.job_id, "action": "result", "result": document},
        )
        target = reply_to or self.results_url
        if not target:
            return
        try:
            self.queues.get(target).send(json.dumps(document), attributes={"lanworker-job-id": result.job_id})
        except TransientError:
            raise
        except Exception as exc:
            # An unusable reply_to must not block deletion forever: the result is in the log.
            logger.error(
                "could not deliver result of job %s to %s: %s",
                result.job_id,
                target,
                exc,
                extra={"job_id": result.job_id, "action": "result"},
            )


class EventPublisher:
    """FOQUS-style job state events, to an SQS queue or an SNS topic, always to the log.

    Events are advisory: a failure to publish one is logged, never fails the job.
    """

    def __init__(self, target: str | None, worker_id: str, queues: QueueCache) -> None:
        self.target = target
        self.worker_id = worker_id
        self.queues = queues
        self._sns: Any = None

    def publish(self, job_id: str, state: str, **details: Any) -> None:
        event = {
            "job_id": job_id,
            "worker_id": self.worker_id,
            "state": state,
            "timestamp": time.time(),
            **details,
        }
        logger.info("job %s state: %s", job_id, state, extra={"job_id": job_id, "action": state})
        if not self.target:
            return
        try:
            self._send(json.dumps(event))
        except Exception as exc:
            logger.warning(
                "could not publish %s event of job %s: %s", state, job_id, exc, extra={"job_id": job_id}
            )

    def _send(self, body: str) -> None:
        EVENT_BACKOFF.call(self._send_once, body)

    def _send_once(self, body: str) -> None:
        assert self.target is not None
        if self.target.startswith("arn:aws:sns:"):
            if self._sns is None:
                self._sns = botocore.session.get_session().create_client("sns")
            try:
                self._sns.publish(TopicArn=self.target, Message=body)
            except Exception as exc:
                if is_transient(exc):
                    raise as_transient(exc, "sns publish") from exc
                raise
            return
        self.queues.get(self.target).send(body)
