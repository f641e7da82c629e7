"""Message leases: one heartbeat thread keeps every running job's message hidden.

Invariants:
- Once `Heartbeats.end(lease)` returns, no visibility change for that message is in flight
  or will be made. A lease marked `settling` (its delete, release or dead-letter is next)
  is not extended any more either, and a beat that was already in flight and finds the
  receipt gone is the settle's doing, not a lost lease: `settling()` never waits, so the
  embedded queue may mark it inside the transaction a beat could be waiting for.
- A lease whose extension fails for longer than the visibility it has left answers
  LEASE_LOST: another worker may have the message, and this one must not upload or
  delete with that receipt.
- One thread for all leases, started with the first one: starting and joining a thread
  per job cost more than a trivial job itself. Leases due together are extended in one
  batch call, ten at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from lanworker.core.errors import StaleReceipt
from lanworker.core.stops import StopReason
from lanworker.queues import Queue, ReceivedMessage
from lanworker.queues.base import MAX_BATCH
from lanworker.reporting.metrics import Metrics

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 5.0  # how long the thread sleeps with no lease at all (close() wakes it)


class Lease:
    """One message's lease; `should_stop` is the job's view of it (thread-safe)."""

    def __init__(
        self,
        message: ReceivedMessage,
        visibility_timeout_s: int,
        interval_s: float,
        shutdown: threading.Event,
    ) -> None:
        self.message = message
        self.job_id = message.message_id
        self.first_received_at = message.first_received_at or time.time()
        now = time.monotonic()
        self.hidden_until = now + visibility_timeout_s
        self.due = now + interval_s
        self.shutdown = shutdown
        self.reason: StopReason | None = None
        self.ended = False
        self.being_settled = False  # its message's delete, release or dead-letter is under way
        self.lock = threading.Lock()  # held while extending; ending waits for it

    def settling(self) -> None:
        """The message is about to leave this worker's hands: no more extensions (one in
        flight may still land; see the module's invariants)."""
        self.being_settled = True

    def should_stop(self) -> StopReason | None:
        if self.reason is not None:
            return self.reason
        if self.shutdown.is_set():
            return StopReason.SHUTDOWN
        return None


@dataclass(frozen=True)
class LeaseTerms:
    """How long a received message stays hidden, how often that is extended, and for how
    long at most (--max-job-runtime-s)."""

    visibility_timeout_s: int
    interval_s: float
    max_runtime_s: float


class Heartbeats:
    def __init__(self, queue: Queue, terms: LeaseTerms, shutdown: threading.Event, metrics: Metrics) -> None:
        self.queue = queue
        self.visibility_timeout_s = terms.visibility_timeout_s
        self.interval_s = terms.interval_s
        self.max_runtime_s = terms.max_runtime_s
        self.shutdown = shutdown
        self.metrics = metrics
        self._leases: set[Lease] = set()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wakes_at = 0.0  # when the thread wakes next on its own
        self._closed = False

    def lease(self, message: ReceivedMessage) -> Lease:
        lease = Lease(message, self.visibility_timeout_s, self.interval_s, self.shutdown)
        with self._changed:
            self._leases.add(lease)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)
                self._thread.start()
            elif lease.due < self._wakes_at:
                self._changed.notify()  # only then: a wake-up per job would cost a thread switch
        return lease

    def end(self, lease: Lease) -> None:
        with lease.lock:
            lease.ended = True
        with self._changed:
            self._leases.discard(lease)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the thread (a worker's run is over); a later lease starts it again."""
        with self._changed:
            self._closed = True
            self._changed.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout_s)
        with self._changed:
            self._thread = None
            self._closed = False

    # ----------------------------------------------------------------- the thread
    def _run(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.due <= now]
                if not due:
                    self._wakes_at = min((lease.due for lease in self._leases), default=now + IDLE_WAIT_S)
                    self._changed.wait(timeout=max(0.0, self._wakes_at - now))
                    continue
            for start in range(0, len(due), MAX_BATCH):
                self._beat(due[start : start + MAX_BATCH])

    def _beat(self, due: list[Lease]) -> None:
        """Extend these leases in one batch. Each lease's lock is held from its check to its
        outcome, so `end()` never returns while its extension is in flight (only this
        thread ever holds more than one lease lock, so there is no order to get wrong)."""
        for lease in due:
            lease.lock.acquire()
        try:
            live = [lease for lease in due if not (lease.ended or lease.being_settled)]
            now, now_epoch = time.monotonic(), time.time()
            for lease in live:
                lease.due = now + self.interval_s
                if now_epoch - lease.first_received_at >= self.max_runtime_s:
                    lease.reason = lease.reason or StopReason.MAX_RUNTIME
            if live:
                messages = [lease.message for lease in live]
                errors = self.queue.change_visibility_batch(messages, self.visibility_timeout_s)
                for lease, error in zip(live, errors, strict=True):
                    self._extended(lease, error)
        finally:
            for lease in due:
                lease.lock.release()
        lost = [lease for lease in due if lease.reason is StopReason.LEASE_LOST]
        if lost:
            with self._changed:
                self._leases.difference_update(lost)

    def _extended(self, lease: Lease, error: Exception | None) -> None:
        if error is None:
            lease.hidden_until = time.monotonic() + self.visibility_timeout_s
            return
        if isinstance(error, StaleReceipt) and lease.being_settled:
            logger.debug("heartbeat raced the settle: %s", error, extra={"job_id": lease.job_id})
            return
        self.metrics.heartbeat_failures.inc()
        if isinstance(error, StaleReceipt):
            logger.error("heartbeat: %s", error, extra={"job_id": lease.job_id, "action": "heartbeat"})
            lost = True
        else:
            remaining = lease.hidden_until - time.monotonic()
            logger.warning(
                "heartbeat failed (%.0f s of visibility left): %s",
                remaining,
                error,
                extra={"job_id": lease.job_id, "action": "heartbeat"},
            )
            lost = remaining <= self.interval_s
        if lost:
            lease.reason = StopReason.LEASE_LOST
            lease.ended = True
