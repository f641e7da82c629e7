"""The worker loop: receive, run jobs concurrently under a heartbeat, report, then delete.

Ordering rule: a message leaves the queue only after its result was delivered, or it was
dead-lettered. Anything that goes wrong before that releases the message (or, with a
lost lease, leaves it alone) so it is delivered again. The job runner decides
(`pipeline.decide`, as `core.outcomes`); the settler (`loop.settle`) carries the decision
out, in that order. `loop.assemble` builds a worker from its config.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lanworker.core.config import WorkerConfig
from lanworker.core.errors import ConfigError
from lanworker.core.outcomes import TRANSIENT_BACKOFF_S, Abandon, Outcome, Release
from lanworker.core.stops import StopReason
from lanworker.executors.base import Executor
from lanworker.loop.leases import Heartbeats, Lease, LeaseTerms
from lanworker.loop.settle import Settler
from lanworker.pipeline.runner import JobRunner
from lanworker.queues import Queue, QueueCache, ReceivedMessage
from lanworker.queues.receive import ReceiveHooks, ReceiveLoop, ReceivePlan, one_at_a_time
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import Reports
from lanworker.storage import Storage
from lanworker.storage.safefs import remove_tree

logger = logging.getLogger(__name__)

PREFETCH_BELOW_S = 1.0  # jobs shorter than this on average get a message prefetched per slot
DISK_CHECK_S = 1.0  # how often the work root's free space is looked at, before a receive


@dataclass(frozen=True)
class WorkerParts:
    """What a worker is made of, beside its config."""

    queue: Queue  # where its jobs come from
    queues: QueueCache  # where results, replies and events go, by URL
    executor: Executor
    storage: Storage
    metrics: Metrics


class Worker:
    def __init__(self, config: WorkerConfig, parts: WorkerParts, runner: JobRunner, reports: Reports) -> None:
        self.config = config
        self.metrics = parts.metrics
        self.queue = queue = parts.queue
        self.runner = runner
        self.reports = reports
        self.executor = parts.executor
        self.shutdown = threading.Event()  # stop receiving; let jobs finish
        self.force = threading.Event()  # stop jobs now
        self.jobs_stop = threading.Event()  # set when the grace period is over
        self.last_receive_at = time.monotonic()
        terms = LeaseTerms(
            config.visibility_timeout_s, config.effective_heartbeat_s, config.max_job_runtime_s
        )
        self.heartbeats = Heartbeats(queue, terms, self.jobs_stop, self.metrics)
        self._lock_file: IO[str] | None = None
        self._settler: Settler | None = None  # while running
        self._leases: dict[str, Lease] = {}  # by receipt handle, from receipt to the job's start
        self._leases_lock = threading.Lock()
        self._recent_job_s = math.inf  # a moving average of job durations; none yet
        self._disk_checked_at = -math.inf
        self._pause_reason: str | None = None

    # ----------------------------------------------------------------- lifecycle
    def request_shutdown(self) -> None:
        """First call: graceful. Second call: force. Called by the signal watcher thread."""
        if self.shutdown.is_set():
            self.force.set()
        self.shutdown.set()

    def run(self) -> None:
        self.queue.check()
        self._claim_work_root()
        logger.info(
            "worker %s (%s) listening on %s, concurrency %d",
            self.config.worker_id,
            self.config.mode,
            self.config.queue_url,
            self.config.concurrency,
            extra={"action": "start"},
        )
        self._settler = Settler(
            self.queue, self.reports, self.heartbeats, self.metrics, self.config.concurrency
        )
        try:
            self._loop()
        finally:
            self._settler.close()
            self.heartbeats.close()
            self._release_work_root()

    def _claim_work_root(self) -> None:
        """Lock our own work dir and clean up after workers that died without cleaning.

        Every live worker holds an flock on WORK_ROOT/ID.lock; a lock file nobody holds
        belongs to a worker that is gone, and its job dirs, processes and containers go too.
        """
        root = self.config.work_root
        try:
            root.mkdir(parents=True, exist_ok=True)
            self._lock_file = lock_worker_id(root, self.config.worker_id)
        except OSError as exc:
            raise ConfigError(f"work root {root} is not usable: {exc}") from exc
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
            (self.config.work_root / f"{self.config.worker_id}.lock").unlink(missing_ok=True)
            self._lock_file.close()
            self._lock_file = None

    # ----------------------------------------------------------------- loop
    def _loop(self) -> None:
        config = self.config
        assert self._settler is not None

        def alive() -> None:
            self.last_receive_at = time.monotonic()

        ReceiveLoop(
            self.queue,
            one_at_a_time(self._process),
            ReceivePlan(config.concurrency, config.wait_time_s, config.visibility_timeout_s, config.once),
            self.shutdown,
            ReceiveHooks(
                on_alive=alive,
                on_receive_error=self.metrics.receive_errors.inc,
                on_received=self._lease,
                prefetch=self._prefetch,
                settling=self._settler.busy,
                paused=self.paused,
            ),
        ).run(config.grace_period_s, self.force, self.jobs_stop.set)

    def paused(self) -> str | None:
        """Why the worker does not receive now: its work root has less than --min-free-mb
        free (checked at most once a second). Running jobs go on."""
        now = time.monotonic()
        if now - self._disk_checked_at >= DISK_CHECK_S:
            self._disk_checked_at = now
            self._pause_reason = self._disk_reason()
        return self._pause_reason

    def _disk_reason(self) -> str | None:
        try:
            free = shutil.disk_usage(self.config.work_root).free
        except OSError:
            return None  # the next job's own error says more
        self.metrics.work_root_free_bytes.set(free)
        low = self.config.min_free_mb and free < self.config.min_free_mb * 1024 * 1024
        self.metrics.receiving_paused.labels("disk-full").set(1 if low else 0)
        if not low:
            if self._pause_reason is not None:
                logger.info("work root has room again; receiving", extra={"action": "receive"})
            return None
        reason = (
            f"disk-full: the work root {self.config.work_root} has {free // (1024 * 1024)} MB free, "
            f"below --min-free-mb {self.config.min_free_mb}"
        )
        if self._pause_reason is None:
            logger.warning("not receiving: %s", reason, extra={"action": "receive"})
        return reason

    def _prefetch(self) -> int:
        """One message per slot beyond the running ones while recent jobs are short, none
        otherwise: a message waiting behind a long job could run on an idle worker. (The
        embedded queue's slots receive for themselves and are never asked.)"""
        return self.config.concurrency if self._recent_job_s < PREFETCH_BELOW_S else 0

    def _lease(self, message: ReceivedMessage) -> None:
        """From the moment of receipt, so a prefetched message stays hidden while it waits."""
        lease = self.heartbeats.lease(message)
        with self._leases_lock:
            self._leases[message.receipt_handle] = lease

    # ----------------------------------------------------------------- one message
    def _process(self, message: ReceivedMessage) -> None:
        assert self._settler is not None
        with self._leases_lock:
            lease = self._leases.pop(message.receipt_handle)
        if self.shutdown.is_set():  # it waited (prefetched) past a shutdown request: never start it
            self._settler.settle(message, lease, Release())
            return
        self.metrics.in_flight.inc()
        started = time.monotonic()
        outcome: Outcome
        try:
            outcome = self.runner.run(message, lease.should_stop)
        except Exception:
            logger.exception(
                "unexpected error in job %s; releasing it", message.message_id, extra={"action": "error"}
            )
            outcome = Release(error="unexpected error in the worker", delay_s=TRANSIENT_BACKOFF_S)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.monotonic() - started
            self._recent_job_s = (
                elapsed if self._recent_job_s == math.inf else 0.8 * self._recent_job_s + 0.2 * elapsed
            )
        if lease.should_stop() is StopReason.LEASE_LOST:
            outcome = Abandon()
        self._settler.settle(message, lease, outcome)


def lock_worker_id(root: Path, worker_id: str) -> IO[str]:
    """The open, flocked ROOT/ID.lock; ConfigError if a live worker holds it.

    A new lock file only ever appears already locked (made under a temporary name, locked,
    then linked into place), so a worker probing for dead ones never takes a starting
    worker's file for a dead worker's and locks it out.
    """
    path = root / f"{worker_id}.lock"
    while True:
        try:
            handle = path.open("r+")  # left by a dead worker, or held by a live one
        except FileNotFoundError:
            created = _create_locked(path)
            if created is None:
                continue  # someone else created it meanwhile: look again
            return created
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            handle.close()
            raise ConfigError(f"another worker with id {worker_id!r} is running on {root}") from None


def _create_locked(path: Path) -> IO[str] | None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    handle = temporary.open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.link(temporary, path)
        return handle
    except FileExistsError:
        handle.close()
        return None
    finally:
        temporary.unlink(missing_ok=True)
