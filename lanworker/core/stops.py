"""Why a running job is asked to stop before it finished by itself.

A leaf module: the executors, the job runner and the worker loop all speak these.
"""

from __future__ import annotations

import enum


class StopReason(enum.Enum):
    """Each value is also the `reason` a result or event carries."""

    TIMEOUT = "timeout"  # the job's timeout_s: reported failed
    MAX_RUNTIME = "max-runtime"  # SQS's 12 h visibility cap is near: reported failed
    DISK_LIMIT = "disk-limit"  # the job dir outgrew --max-job-disk-mb: reported failed
    CANCELED = "canceled"  # a cancel marker: reported canceled
    SHUTDOWN = "shutdown"  # the worker's grace period is over: released for another worker
    LEASE_LOST = "lease-lost"  # the heartbeat lost the message: left alone, never touched again

    @property
    def fails_job(self) -> bool:
        """The job is over and reported failed (not released, not canceled)."""
        return self in (StopReason.TIMEOUT, StopReason.MAX_RUNTIME, StopReason.DISK_LIMIT)
