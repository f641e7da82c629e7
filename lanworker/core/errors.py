"""Error kinds, grouped by what the worker loop must do with the message.

- InvalidMessage: the message can never succeed; report it and dead-letter it.
  MessageRefused, one of them, is a message a queue would not take from us.
- JobFailed: the job ran (or tried to) and failed; report it and delete the message.
- TransientError: infrastructure trouble; leave the message for redelivery.
- ConfigError: the worker itself is misconfigured; refuse to start.

Which low-level failures count as transient, and the retry policy, live in `retries.py`.
"""

from __future__ import annotations

import errno

from lanworker.core.stops import StopReason


class LanworkerError(Exception):
    """Base of every error lanworker raises on purpose."""

    kind = "error"


class ConfigError(LanworkerError):
    kind = "config"


class QueueUnreachable(LanworkerError):
    kind = "queue-unreachable"


class QueueAccessDenied(QueueUnreachable):
    """The queue refuses these credentials (wrong, expired, or without the permission).
    A worker keeps trying, as for an outage: credentials and policies change without it."""

    kind = "queue-access-denied"


class InvalidMessage(LanworkerError):
    """The message is malformed, breaks the schema, or asks for something forbidden."""

    kind = "invalid-message"

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class MessageRefused(InvalidMessage):
    """A queue refused to take a message as it is (too large, characters or attributes it
    does not accept): sending the same message again cannot succeed."""

    kind = "refused"


class JobFailed(LanworkerError):
    """The job could not complete: missing input, command failure, timeout, missing output."""

    kind = "job-failed"

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason


class TransientError(LanworkerError):
    """S3, SQS or docker unreachable or throttling: worth retrying later."""

    kind = "transient"


class StaleReceipt(TransientError):
    """The message's receipt is no longer ours: another worker may own it now."""

    kind = "stale-receipt"


class DiskFull(TransientError):
    """A disk the job writes to (the work root, a file:// destination) has no space left:
    released with backoff, as for an outage; the job itself did nothing wrong."""

    kind = "disk-full"


def disk_full(exc: OSError, where: str) -> DiskFull | None:
    """DiskFull for ENOSPC and EDQUOT (naming the path), None for any other OSError."""
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return DiskFull(f"disk full: {exc.filename or where}: {exc.strerror or exc}")


class CannotStart(JobFailed):
    """The command or image cannot be started at all: no attempt can succeed, so the
    message is dead-lettered (kept whole for a human) instead of deleted."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="cannot-start")


class Interrupted(LanworkerError):
    """Staging or uploading was stopped part-way by a StopReason (timeout, shutdown, ...)."""

    kind = "interrupted"

    def __init__(self, reason: StopReason) -> None:
        super().__init__(f"interrupted: {reason.value}")
        self.reason = reason


class AddressRefused(Exception):
    """An http(s) input reached (or would reach) a loopback, link-local or private address.
    Raised by webfetch; the storage layer makes it an InvalidMessage naming the input."""
