"""What the worker loop does with a message once its job is decided: one of four types.

The job runner never touches the queue; it returns an Outcome and `Worker._settle`
matches on its type, so every queue operation and its ordering lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from lanworker.reporting.results import JobResult

# A message released after an infrastructure failure waits this long before it is seen
# again, so a persistent outage does not become a hot receive-fail-release loop.
TRANSIENT_BACKOFF_S = 5


@dataclass(frozen=True)
class Requeue:
    """A retry of a failed attempt: sent before the message is deleted."""

    body: str
    delay_s: int = 0


@dataclass(frozen=True)
class Delete:
    """Report the result (and send the retry, if any), then delete the message."""

    result: JobResult
    reply_to: str | None = None
    requeue: Requeue | None = None


@dataclass(frozen=True)
class DeadLetter:
    """Report the result, then move the message out of the way, body intact."""

    result: JobResult
    reply_to: str | None = None

    @property
    def reason(self) -> str:
        return self.result.error or "invalid message"


@dataclass(frozen=True)
class Release:
    """Give the message back for another attempt, after delay_s."""

    error: str | None = None
    delay_s: int = 0


@dataclass(frozen=True)
class Abandon:
    """The lease is gone: touching the message now would use a stale receipt."""


Outcome = Delete | DeadLetter | Release | Abandon
