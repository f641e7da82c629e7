"""What can stop one job, answered by one call: the lease, the job's deadline, its cancel
marker and its job dir's size. Every stage - staging, running, uploading - asks it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from lanworker.core.errors import Interrupted
from lanworker.core.stops import StopReason
from lanworker.executors.base import StopCheck
from lanworker.storage.safefs import disk_usage_bytes

DISK_CHECK_INTERVAL_S = 2.0


class JobWatch:
    """Everything that can stop one job, answered by one call; thread-safe.

    The lease's answer (shutdown, lease lost, max runtime) comes first; then the job's own
    deadline, its cancel marker (looked up once per interval) and its job dir's size
    (measured every DISK_CHECK_INTERVAL_S). Once a reason is found it sticks.
    """

    def __init__(
        self,
        lease: StopCheck,
        timeout_s: float | None,
        is_canceled: Callable[[], bool] | None,
        cancel_interval_s: float,
        disk: tuple[Path, int] | None,
    ) -> None:
        self.lease = lease
        self.deadline = time.monotonic() + timeout_s if timeout_s else None
        self.is_canceled = is_canceled
        self.cancel_interval_s = cancel_interval_s
        self.disk = disk
        self.reason: StopReason | None = None
        self._next_cancel_check = time.monotonic() + cancel_interval_s
        self._next_disk_check = time.monotonic() + DISK_CHECK_INTERVAL_S
        self._slow_checks = threading.Lock()

    def __call__(self) -> StopReason | None:
        leased = self.lease()
        if leased is not None:
            return leased
        if self.reason is None:
            self.reason = self._own_reason()
        return self.reason

    def checkpoint(self) -> None:
        """For transfers: raise Interrupted when the job must stop."""
        reason = self()
        if reason is not None:
            raise Interrupted(reason)

    def lease_checkpoint(self) -> None:
        """For diagnostics uploaded after the job's own time is up: only the lease counts."""
        reason = self.lease()
        if reason is not None:
            raise Interrupted(reason)

    def _own_reason(self) -> StopReason | None:
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            return StopReason.TIMEOUT
        if not self._slow_checks.acquire(blocking=False):
            return None  # another thread is checking right now
        try:
            if self.is_canceled is not None and now >= self._next_cancel_check:
                self._next_cancel_check = now + self.cancel_interval_s
                if self.is_canceled():
                    return StopReason.CANCELED
            if self.disk is not None and now >= self._next_disk_check:
                root, limit_bytes = self.disk
                started = time.monotonic()
                if disk_usage_bytes(root) > limit_bytes:
                    return StopReason.DISK_LIMIT
                # A huge tree is measured less often, so measuring never dominates.
                self._next_disk_check = now + max(DISK_CHECK_INTERVAL_S, 10 * (time.monotonic() - started))
        finally:
            self._slow_checks.release()
        return None
