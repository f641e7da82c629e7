"""Settling finished jobs and translated events, in one thread: report, then delete,
dead-letter or release.

Invariants:
- A message leaves the queue only after its result was delivered (or it was
  dead-lettered); when delivering fails, the message is released, never deleted.
- A job's lease is kept until its message is settled, so visibility cannot run out
  between the end of the job and its delete; it is marked `settling` just before the
  delete, release or dead-letter, so no heartbeat extends it afterwards.
- For a remote queue (SQS) settling runs in its own thread: a job slot is free again as
  soon as its job is decided, settling overlaps the next job, and the results of jobs
  settled together go as one batch, then their deletes (ten per call). For the embedded
  queue a delete costs less than handing it to another thread, so the job's thread
  settles it.
- `close()` returns only when everything handed over is settled.
"""

from __future__ import annotations

import logging
import queue as stdlib_queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from lanworker.core.outcomes import Abandon, DeadLetter, Delete, Outcome, Release
from lanworker.core.states import EventState
from lanworker.loop.leases import Heartbeats, Lease
from lanworker.queues import Queue, ReceivedMessage
from lanworker.queues.base import MAX_BATCH
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import ReadyResult, Reports

logger = logging.getLogger(__name__)

STEP_S = 1.0  # the longest any wait here lasts before it looks again


@dataclass(frozen=True)
class Decided:
    message: ReceivedMessage
    lease: Lease
    outcome: Outcome


class Settler:
    def __init__(
        self, queue: Queue, reports: Reports, heartbeats: Heartbeats, metrics: Metrics, backlog: int
    ) -> None:
        """Settles in a thread of its own for a remote queue (SQS), where settling is calls
        over the network; inline for the embedded one."""
        self.queue = queue
        self.reporter = reports.results
        self.events = reports.events
        threaded = queue.remote
        self.heartbeats = heartbeats
        self.metrics = metrics
        self._pending: stdlib_queue.Queue[Decided | None] = stdlib_queue.Queue(maxsize=max(1, backlog))
        self._in_hand = 0
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="settler", daemon=True)
            self._thread.start()

    def settle(self, message: ReceivedMessage, lease: Lease, outcome: Outcome) -> None:
        """Hand a decided job over; waits while the backlog is full (settling is behind)."""
        decided = Decided(message, lease, outcome)
        with self._count_lock:
            self._in_hand += 1
        if not self._put(decided):
            self._settle_batch([decided])  # never lose a decision to a dead thread

    def busy(self) -> bool:
        """Whether jobs handed over are not settled yet (a --once run waits for them: a
        settling job may send its retry)."""
        return self._in_hand > 0

    def close(self) -> None:
        """Settle everything handed over, then stop the thread."""
        if self._thread is None:
            return
        self._put(None)
        while self._thread.is_alive():
            self._thread.join(timeout=STEP_S)
            if self._thread.is_alive():
                logger.info("still settling %d job(s)", self._pending.qsize(), extra={"action": "shutdown"})

    def _put(self, item: Decided | None) -> bool:
        """False when there is no thread to take it: the caller settles it itself."""
        while self._thread is not None and self._thread.is_alive():
            try:
                self._pending.put(item, timeout=STEP_S)
                return True
            except stdlib_queue.Full:
                continue
        return False

    # ----------------------------------------------------------------- the thread
    def _run(self) -> None:
        closing = False
        while not closing:
            try:
                first = self._pending.get(timeout=STEP_S)
            except stdlib_queue.Empty:
                continue
            batch: list[Decided] = []
            item: Decided | None = first
            while True:
                if item is None:
                    closing = True  # everything handed over before close() is in this batch
                    break
                batch.append(item)
                if len(batch) == MAX_BATCH:
                    break
                try:
                    item = self._pending.get_nowait()
                except stdlib_queue.Empty:
                    break
            self._settle_batch(batch)

    def _settle_batch(self, batch: list[Decided]) -> None:
        try:
            # Results are logged and serialised before the transaction: processes sharing
            # the embedded queue's file wait for each other's transactions.
            ready = self._prepare(batch)
            with self.queue.together(self._destinations(ready)):
                delivered = self._report(
                    [decided for decided in batch if self._before_report(decided)], ready
                )
                deletes = [decided for decided in delivered if self._after_report(decided)]
                if deletes:
                    errors = self.queue.delete_batch([decided.message for decided in deletes])
                    for decided, error in zip(deletes, errors, strict=True):
                        self._deleted(decided, error)
        except Exception:
            # Unexpected; or the embedded queue's joined commit failed, and then nothing of
            # the batch happened. Either way its messages come back and run again.
            logger.exception("settling failed; the messages come back after their visibility timeout")
        finally:
            for decided in batch:
                self.heartbeats.end(decided.lease)
            with self._count_lock:
                self._in_hand -= len(batch)

    def _destinations(self, ready: dict[int, ReadyResult]) -> set[str]:
        """Every queue settling this batch may send to besides the job queue: the targets
        of its prepared results (results, replies), and the events target."""
        urls = {item.target for item in ready.values() if item.target}
        if self.events.target:
            urls.add(self.events.target)
        return urls

    def _before_report(self, decided: Decided) -> bool:
        """Abandon and Release end here; True when the outcome has a result to deliver
        (a retry's next attempt is queued first)."""
        message, outcome = decided.message, decided.outcome
        if isinstance(outcome, Abandon):
            self.metrics.jobs.labels("abandoned").inc()
            return False
        if isinstance(outcome, Release):
            self.metrics.jobs.labels("released").inc()
            decided.lease.settling()
            self._safely(self.queue.release, message, "release", outcome.error, outcome.delay_s)
            return False
        if outcome.result is None:
            return True  # nothing to report (a translated event): on to its delete
        if isinstance(outcome, Delete) and outcome.requeue is not None:
            try:
                requeue = outcome.requeue  # the next attempt keeps the sender's attributes and group
                self.queue.send(
                    requeue.body, message.attributes, delay_s=requeue.delay_s, group_id=message.group_id
                )
            except Exception as exc:
                self._undelivered(decided, outcome.result.job_id, exc)
                return False
        return True

    def _prepare(self, batch: list[Decided]) -> dict[int, ReadyResult]:
        """The results of these made ready to send, by id() of their Decided."""
        reporting = []
        for decided in batch:
            outcome = decided.outcome
            if isinstance(outcome, Delete | DeadLetter) and outcome.result is not None:
                outcome.result.receive_count = decided.message.receive_count
                reporting.append((decided, outcome.result, outcome.reply_to))
        ready = self.reporter.prepare([(result, reply_to) for _, result, reply_to in reporting])
        return {id(decided): item for (decided, _, _), item in zip(reporting, ready, strict=True)}

    def _report(self, reporting: list[Decided], ready: dict[int, ReadyResult]) -> list[Decided]:
        """Deliver the results of these, all together; those delivered (or with none)."""
        delivered = [decided for decided in reporting if id(decided) not in ready]
        with_result = [decided for decided in reporting if id(decided) in ready]
        errors = self.reporter.deliver([ready[id(decided)] for decided in with_result]) if with_result else []
        for decided, error in zip(with_result, errors, strict=True):
            if error is None:
                delivered.append(decided)
            else:
                self._undelivered(decided, ready[id(decided)].job_id, error)
        return delivered

    def _undelivered(self, decided: Decided, job_id: str, error: Exception) -> None:
        logger.error(
            "could not deliver the result, releasing the message: %s",
            error,
            extra={"job_id": job_id, "action": "released"},
        )
        decided.lease.settling()
        self._safely(self.queue.release, decided.message, "release")

    def _after_report(self, decided: Decided) -> bool:
        """True when the message is now to be deleted; a dead letter is moved here."""
        outcome = decided.outcome
        decided.lease.settling()
        if isinstance(outcome, DeadLetter):
            if self._safely(self.queue.dead_letter, decided.message, "dead-letter", outcome.reason):
                self.metrics.jobs.labels(EventState.DEAD_LETTERED.value).inc()
                if outcome.result is not None:
                    self.events.publish(
                        outcome.result.job_id, EventState.DEAD_LETTERED, reason=outcome.reason
                    )
            return False
        return True

    def _deleted(self, decided: Decided, error: Exception | None) -> None:
        assert isinstance(decided.outcome, Delete)
        result = decided.outcome.result
        if error is None:
            self.metrics.jobs.labels(result.state.value if result else "deleted").inc()
            return
        # The message will come back after its visibility timeout; nothing is lost.
        logger.error(
            "delete of message %s failed: %s",
            decided.message.message_id,
            error,
            extra={"job_id": result.job_id if result else decided.message.message_id, "action": "delete"},
        )

    @staticmethod
    def _safely(operation: Callable[..., None], message: ReceivedMessage, what: str, *args: object) -> bool:
        try:
            operation(message, *args)
            return True
        except Exception as exc:
            # The message will come back after its visibility timeout; nothing is lost.
            logger.error("%s of message %s failed: %s", what, message.message_id, exc, extra={"action": what})
            return False
