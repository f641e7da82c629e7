"""What the worker loop does with a message once its job is decided: one of four types.

Neither the job runner nor the translator touches the queue it reads; each returns an
Outcome and `loop.settle.Settler` matches on its type, so every queue operation and its
ordering lives in one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from lanworker.core.states import JobState

# A message released after an infrastructure failure waits this long before it is seen
# again, so a persistent outage does not become a hot receive-fail-release loop.
TRANSIENT_BACKOFF_S = 5


# What a result cut to its bones keeps: what happened, to which job, where.
# What a result cut to its bones keeps: what happened, to which job, where.
CORE_FIELDS = (
    "job_id",
    "service",
    "state",
    "worker_id",
    "attempt",
    "receive_count",
    "exit_code",
    "reason",
    "error",
    "timings_s",
    "finished_at",
)


@dataclass
class JobResult:
    job_id: str
    service: str | None
    state: JobState
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


@dataclass(frozen=True)
class Requeue:
    """A retry of a failed attempt: sent before the message is deleted."""

    body: str
    delay_s: int = 0


@dataclass(frozen=True)
class Delete:
    """Report the result, if there is one (and send the retry, if any), then delete the
    message. The translator's outcomes have none: its commands were sent before."""

    result: JobResult | None = None
    reply_to: str | None = None
    requeue: Requeue | None = None


@dataclass(frozen=True)
class DeadLetter:
    """Report the result, if there is one, then move the message out of the way, body intact."""

    result: JobResult | None = None
    reply_to: str | None = None
    why: str | None = None  # the reason, when there is no result to carry it

    @property
    def reason(self) -> str:
        return self.why or (self.result.error if self.result else None) or "invalid message"


@dataclass(frozen=True)
class Release:
    """Give the message back for another attempt, after delay_s."""

    error: str | None = None
    delay_s: int = 0


@dataclass(frozen=True)
class Abandon:
    """The lease is gone: touching the message now would use a stale receipt."""


Outcome = Delete | DeadLetter | Release | Abandon
