"""One job from received message to outcome, in order: admit, stage, execute, collect,
upload, decide. This module is just the calls; each stage lives in the module of its name
and takes the job's JobContext.

The runner never touches the queue. It returns an Outcome (`core.outcomes`) that tells the
worker loop what to do with the message, so every queue operation and its ordering lives
in one place (`loop.settle`). Every stage obeys the same `JobWatch`: the job's timeout,
cancel markers, the disk limit, shutdown and the lease.
"""

from __future__ import annotations

import logging

from lanworker.core.config import WorkerConfig
from lanworker.core.errors import Interrupted, InvalidMessage, JobFailed, TransientError, disk_full
from lanworker.core.outcomes import DeadLetter, Delete, Outcome, Release
from lanworker.core.states import EventState, JobState
from lanworker.core.stops import StopReason
from lanworker.executors.base import Executor, StopCheck
from lanworker.message.policy import MessagePolicy
from lanworker.pipeline import decide
from lanworker.pipeline.admit import admit
from lanworker.pipeline.collect import collect
from lanworker.pipeline.context import Admitted, JobContext, JobTools, Phase
from lanworker.pipeline.execute import execute
from lanworker.pipeline.stage import stage
from lanworker.pipeline.upload import upload
from lanworker.pipeline.watch import JobWatch
from lanworker.pipeline.workspace import JobDirs
from lanworker.queues import ReceivedMessage
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import EventPublisher
from lanworker.storage import Storage
from lanworker.storage.control import CancelWatch

logger = logging.getLogger(__name__)


class JobRunner:
    def __init__(
        self,
        config: WorkerConfig,
        executor: Executor,
        storage: Storage,
        events: EventPublisher,
        metrics: Metrics,
    ) -> None:
        cancels = (
            CancelWatch(storage, config.control_url, config.cancel_check_s) if config.control_url else None
        )
        self.tools = JobTools(config, executor, storage, events, metrics, cancels)
        self.policy = MessagePolicy.from_config(config)
        self.dirs = JobDirs(config.work_root / config.worker_id, keep=config.concurrency)

    def run(self, received: ReceivedMessage, should_stop: StopCheck) -> Outcome:
        admitted = admit(received, self.tools, self.policy)
        if isinstance(admitted, DeadLetter):
            return admitted
        outcome = self._attempt(admitted, should_stop)
        if isinstance(outcome, Release) and received.receive_count >= self.tools.config.max_receives:
            # The queue would drop it on the next receive without a word.
            outcome = decide.exhausted(admitted, self.tools, outcome.error)
        if self.tools.cancels is not None and isinstance(outcome, Delete | DeadLetter):
            self.tools.cancels.clear(admitted.job_id)  # the job is over: its marker must not outlive it
        return outcome

    def _attempt(self, admitted: Admitted, should_stop: StopCheck) -> Outcome:
        tools, received, message = self.tools, admitted.received, admitted.message
        if received.receive_count > tools.config.max_receives:  # a worker died on the last one
            return decide.exhausted(admitted, tools, "a worker stopped during the last attempt")
        tools.events.publish(
            admitted.job_id,
            EventState.RECEIVED,
            attempt=message.attempt,
            receive_count=received.receive_count,
        )
        if message.test:
            return decide.listening(admitted, tools)
        if tools.cancels is not None and tools.cancels.requested(admitted.job_id, received.sent_at):
            return decide.canceled_before_start(admitted, tools)
        return self._execute(self._context(admitted, should_stop))

    def _context(self, admitted: Admitted, lease: StopCheck) -> JobContext:
        config = self.tools.config
        workspace = self.dirs.workspace(admitted.job_id)
        root = workspace.root
        cancels, sent_at = self.tools.cancels, admitted.received.sent_at
        watch = JobWatch(
            lease,
            admitted.message.timeout_s or admitted.terms.timeout_s or config.default_timeout_s,
            (lambda: cancels.requested(admitted.job_id, sent_at)) if cancels is not None else None,
            config.cancel_check_s,
            (root, config.max_job_disk_mb * 1024 * 1024) if config.max_job_disk_mb else None,
        )
        return JobContext(
            admitted, self.tools, workspace, watch, admitted.result(self.tools, JobState.FAILED)
        )

    def _execute(self, job: JobContext) -> Outcome:
        try:
            job.workspace.create(for_containers=self.tools.executor.kind == "docker")
            stage(job)
            return self._after_run(job)
        except Interrupted as exc:
            return decide.stopped(job, exc.reason)
        except InvalidMessage as exc:
            return decide.rejected(job, exc)
        except JobFailed as exc:
            return decide.failed(job, exc)
        except TransientError as exc:
            return decide.released(job.job_id, exc, self.tools)
        except OSError as exc:  # the work root itself, outside any storage call
            full = disk_full(exc, str(job.workspace.root))
            if full is None:
                raise
            return decide.released(job.job_id, full, self.tools)
        finally:
            self._clean_up(job)

    def _after_run(self, job: JobContext) -> Outcome:
        execution = execute(job)
        succeeded = decide.ran_to_success(job, execution)
        stop = execution.stop_reason
        # After a timeout the job's own time is up, but its stdout/stderr are still worth
        # uploading; after a disk-limit stop nothing is (they may be what filled the disk).
        if stop is not StopReason.DISK_LIMIT:
            with Phase(job, EventState.UPLOADING):
                job.result.outputs = upload(
                    job, collect(job, succeeded), job.transfers(lease_only=stop is not None)
                )
        decide.still_leased(job)
        return decide.verdict(job, execution, succeeded)

    def _clean_up(self, job: JobContext) -> None:
        if self.tools.config.keep_workdir:
            logger.info(
                "keeping work dir %s", job.workspace.root, extra={"job_id": job.job_id, "action": "cleanup"}
            )
        else:
            job.workspace.remove()
