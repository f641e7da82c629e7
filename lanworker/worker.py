"""The worker loop: receive, run jobs concurrently under a heartbeat, report, then delete.

Ordering rule: a message leaves the queue only after its result was delivered, or it was
dead-lettered. Anything that goes wrong before that releases the message (or, with a
lost lease, leaves it alone) so it is delivered again.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO

from lanworker.config import WorkerConfig
from lanworker.errors import ConfigError, QueueUnreachable, StaleReceipt, TransientError
from lanworker.executors.base import Executor
from lanworker.jobs import ABANDON, DEAD_LETTER, DELETE, RELEASE, TRANSIENT_BACKOFF_S, JobRunner, Outcome
from lanworker.metrics import Metrics
from lanworker.queues import Queue, ReceivedMessage, SinglePass
from lanworker.results import EventPublisher, ResultReporter
from lanworker.staging import remove_tree

logger = logging.getLogger(__name__)

RECEIVE_BACKOFF_MAX_S = 30.0
ONCE_WAIT_S = 1


class Lease:
    """Keeps one message hidden while its job runs, and says when the job must stop.

    The heartbeat extends visibility every interval. If extending fails for longer than
    the visibility that remains, another worker may already have the message: the job
    is told 'lease-lost' and the worker must not upload or delete with that receipt.
    """

    def __init__(
        self,
        queue: Queue,
        message: ReceivedMessage,
        config: WorkerConfig,
        shutdown: threading.Event,
        metrics: Metrics,
    ) -> None:
        self.metrics = metrics
        self.queue = queue
        self.message = message
        self.config = config
        self.shutdown = shutdown
        self.job_id = message.message_id
        self.first_received_at = message.first_received_at or time.time()
        self.hidden_until = time.monotonic() + config.visibility_timeout_s
        self._reason: str | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{message.message_id[:8]}", daemon=True
        )

    def start(self) -> Lease:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def should_stop(self) -> str | None:
        if self._reason is not None:
            return self._reason
        if self.shutdown.is_set():
            return "shutdown"
        return None

    def _beat(self) -> None:
        interval = self.config.effective_heartbeat_s
        while not self._stopped.wait(interval):
            if time.time() - self.first_received_at >= self.config.max_job_runtime_s:
                self._reason = self._reason or "max-runtime"
            try:
                self.queue.change_visibility(self.message, self.config.visibility_timeout_s)
                self.hidden_until = time.monotonic() + self.config.visibility_timeout_s
            except StaleReceipt as exc:
                self.metrics.heartbeat_failures.inc()
                logger.error("heartbeat: %s", exc, extra={"job_id": self.job_id, "action": "heartbeat"})
                self._reason = "lease-lost"
                return
            except Exception as exc:
                self.metrics.heartbeat_failures.inc()
                remaining = self.hidden_until - time.monotonic()
                logger.warning(
                    "heartbeat failed (%.0f s of visibility left): %s",
                    remaining,
                    exc,
                    extra={"job_id": self.job_id, "action": "heartbeat"},
                )
                if remaining <= interval:
                    self._reason = "lease-lost"
                    return


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        queue: Queue,
        runner: JobRunner,
        reporter: ResultReporter,
        events: EventPublisher,
        executor: Executor,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.queue = queue
        self.runner = runner
        self.reporter = reporter
        self.events = events
        self.executor = executor
        self.shutdown = threading.Event()  # stop receiving; let jobs finish
        self.force = threading.Event()  # stop jobs now
        self.jobs_stop = threading.Event()  # set when the grace period is over
        self.last_receive_at = time.monotonic()
        self._lock_file: IO[str] | None = None

    # ----------------------------------------------------------------- lifecycle
    def request_shutdown(self) -> None:
        """First call: graceful. Second call: force. Called by the signal watcher thread."""
        if self.shutdown.is_set():
            self.force.set()
        self.shutdown.set()

    def run(self) -> None:
        self.queue.check()
        self._claim_work_root()
        try:
            self._loop()
        finally:
            self._release_work_root()

    def _claim_work_root(self) -> None:
        """Lock our own work dir and clean up after workers that died without cleaning.

        Every live worker holds an flock on WORK_ROOT/ID.lock; a lock file nobody holds
        belongs to a worker that is gone, and its job dirs, processes and containers go too.
        """
        root = self.config.work_root
        root.mkdir(parents=True, exist_ok=True)
        self._lock_file = (root / f"{self.config.worker_id}.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another worker with id {self.config.worker_id!r} is running on {root}"
            ) from None
        dead: dict[str, IO[str]] = {}
        for lock_path in sorted(root.glob("*.lock")):
            worker_id = lock_path.stem
            if worker_id == self.config.worker_id:
                continue
            probe = lock_path.open("a")
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                dead[worker_id] = probe
            except BlockingIOError:
                probe.close()  # that worker is alive
        self.executor.cleanup_stale([self.config.worker_id, *dead])
        # --keep-workdir is for debugging: job dirs stay until a worker runs without it.
        if not self.config.keep_workdir:
            remove_tree(root / self.config.worker_id)
        for worker_id, held in dead.items():
            if not self.config.keep_workdir:
                remove_tree(root / worker_id)
            (root / f"{worker_id}.lock").unlink(missing_ok=True)
            held.close()
        if dead:
            logger.info("cleaned up after stopped workers: %s", ", ".join(dead), extra={"action": "cleanup"})

    def _release_work_root(self) -> None:
        if self._lock_file is not None:
            if not self.config.keep_workdir:
                remove_tree(self.config.work_root / self.config.worker_id)
            Path(self._lock_file.name).unlink(missing_ok=True)
            self._lock_file.close()
            self._lock_file = None

    # ----------------------------------------------------------------- loop
    def _loop(self) -> None:
        config = self.config
        futures: set[Future[None]] = set()
        single_pass = SinglePass(self.queue)
        backoff_s = 1.0
        with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="job") as pool:
            while not self.shutdown.is_set():
                futures = {f for f in futures if not f.done()}
                free = config.concurrency - len(futures)
                if free <= 0:
                    wait(futures, timeout=1.0, return_when=FIRST_COMPLETED)
                    self.last_receive_at = time.monotonic()  # busy is not stalled
                    continue
                try:
                    messages = self.queue.receive(
                        min(free, 10),
                        min(config.wait_time_s, ONCE_WAIT_S) if config.once else config.wait_time_s,
                        config.visibility_timeout_s,
                    )
                    backoff_s = 1.0
                except (TransientError, QueueUnreachable) as exc:
                    self.metrics.receive_errors.inc()
                    logger.error(
                        "receive failed, retrying in %.0f s: %s", backoff_s, exc, extra={"action": "receive"}
                    )
                    self.shutdown.wait(backoff_s)
                    backoff_s = min(backoff_s * 2, RECEIVE_BACKOFF_MAX_S)
                    continue
                self.last_receive_at = time.monotonic()
                if self.shutdown.is_set():
                    # A long poll that returns after the signal: hand these straight back.
                    for message in messages:
                        self._safely(self.queue.release, message, "release")
                    break
                drained = not messages
                if config.once:
                    messages = single_pass.first_sightings(messages)
                for message in messages:
                    futures.add(pool.submit(self._process, message))
                if config.once and drained:
                    if not futures:
                        break
                    wait(futures, return_when=FIRST_COMPLETED)
            self._drain(futures)
        single_pass.finish()

    def _drain(self, futures: set[Future[None]]) -> None:
        pending = {f for f in futures if not f.done()}
        if not pending:
            return
        logger.info(
            "waiting up to %.0f s for %d running job(s) to finish",
            self.config.grace_period_s,
            len(pending),
            extra={"action": "shutdown"},
        )
        deadline = time.monotonic() + self.config.grace_period_s
        while pending and not self.force.is_set() and time.monotonic() < deadline:
            _, pending = wait(pending, timeout=0.2)
        if pending:
            logger.warning(
                "stopping %d job(s) and releasing their messages", len(pending), extra={"action": "shutdown"}
            )
            self.jobs_stop.set()
            wait(pending)

    # ----------------------------------------------------------------- one message
    def _process(self, message: ReceivedMessage) -> None:
        self.metrics.in_flight.inc()
        lease = Lease(self.queue, message, self.config, self.jobs_stop, self.metrics).start()
        try:
            outcome = self.runner.run(message, lease.should_stop)
        except Exception:
            logger.exception(
                "unexpected error in job %s; releasing it", message.message_id, extra={"action": "error"}
            )
            outcome = Outcome(
                RELEASE, error="unexpected error in the worker", release_delay_s=TRANSIENT_BACKOFF_S
            )
        finally:
            lease.stop()
            self.metrics.in_flight.dec()
        if lease.should_stop() == "lease-lost":
            outcome = Outcome(ABANDON)
        self._settle(message, outcome)

    def _settle(self, message: ReceivedMessage, outcome: Outcome) -> None:
        """Report, then delete or dead-letter; on any failure give the message back."""
        job_id = outcome.result.job_id if outcome.result else message.message_id
        if outcome.action == ABANDON:
            self.metrics.jobs.labels("abandoned").inc()
            return
        if outcome.action == RELEASE:
            self.metrics.jobs.labels("released").inc()
            self._safely(self.queue.release, message, "release", outcome.error, outcome.release_delay_s)
            return
        if outcome.result is not None:
            outcome.result.receive_count = message.receive_count
        try:
            if outcome.requeue_body is not None:
                self.queue.send(outcome.requeue_body, delay_s=outcome.requeue_delay_s)
            if outcome.result is not None:
                self.reporter.report(outcome.result, outcome.reply_to)
        except Exception as exc:
            logger.error(
                "could not deliver the result of %s, releasing the message: %s",
                job_id,
                exc,
                extra={"job_id": job_id, "action": "released"},
            )
            self._safely(self.queue.release, message, "release")
            return
        if outcome.action == DEAD_LETTER:
            reason = outcome.result.error if outcome.result and outcome.result.error else "invalid message"
            if self._safely(self.queue.dead_letter, message, "dead-letter", reason):
                self.metrics.jobs.labels("dead-lettered").inc()
                self.events.publish(job_id, "dead-lettered", reason=reason)
        elif outcome.action == DELETE and self._safely(self.queue.delete, message, "delete"):
            self.metrics.jobs.labels(outcome.result.state if outcome.result else "deleted").inc()

    def _safely(self, operation: object, message: ReceivedMessage, what: str, *args: object) -> bool:
        try:
            operation(message, *args)  # type: ignore[operator]
            return True
        except Exception as exc:
            # The message will come back after its visibility timeout; nothing is lost.
            logger.error("%s of message %s failed: %s", what, message.message_id, exc, extra={"action": what})
            return False
