"""One job as it travels the pipeline: the JobContext every stage takes and adds to.

A stage reads what earlier stages put here (the admitted message, the staged inputs) and
writes its own part (the result's fields, the staged layout); nothing about a job is
passed around beside it. `JobTools` is what the runner owns and every job shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lanworker.core.config import WorkerConfig
from lanworker.core.outcomes import JobResult
from lanworker.core.states import EventState, JobState
from lanworker.executors.base import Executor, JobTerms
from lanworker.message.command import CommandMessage
from lanworker.pipeline.watch import JobWatch
from lanworker.pipeline.workspace import TaskLayout, Workspace
from lanworker.queues import ReceivedMessage
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import EventPublisher
from lanworker.storage import Storage, TransferRecord
from lanworker.storage.control import CancelWatch
from lanworker.storage.pool import Transfers


@dataclass(frozen=True)
class JobTools:
    """What runs every job: the worker's config and the parts it was built with."""

    config: WorkerConfig
    executor: Executor
    storage: Storage
    events: EventPublisher
    metrics: Metrics
    cancels: CancelWatch | None = None


@dataclass
class Admitted:
    """A message that passed admission: its job id, the parsed message, and its terms."""

    job_id: str
    message: CommandMessage
    terms: JobTerms
    received: ReceivedMessage

    def result(self, tools: JobTools, state: JobState, **fields: Any) -> JobResult:
        return JobResult(
            job_id=self.job_id,
            service=self.message.service,
            state=state,
            worker_id=tools.config.worker_id,
            attempt=self.message.attempt,
            **fields,
        )


@dataclass(frozen=True)
class PlannedUpload:
    """An output argument: the path the command writes (a file, or a directory)."""

    local: PurePosixPath  # relative to the job dir
    uri: str
    label: str
    is_directory: bool = False


@dataclass
class StagedJob:
    argv: list[str] = field(default_factory=list)
    uploads: list[PlannedUpload] = field(default_factory=list)
    output_prefixes: list[tuple[str, str]] = field(default_factory=list)  # (dir-relative prefix, URI prefix)
    downloads: list[TransferRecord] = field(default_factory=list)
    task: TaskLayout | None = None  # a container task's mounts


@dataclass
class JobContext:
    """An admitted job while it runs: its dir, what can stop it, what staging found, and
    the result each stage fills in (failed until the decision says otherwise)."""

    admitted: Admitted
    tools: JobTools
    workspace: Workspace
    watch: JobWatch
    result: JobResult
    staged: StagedJob = field(default_factory=StagedJob)

    @property
    def job_id(self) -> str:
        return self.admitted.job_id

    @property
    def message(self) -> CommandMessage:
        return self.admitted.message

    def transfers(self, lease_only: bool = False) -> Transfers:
        """Storage with the job's concurrency; each transfer checks the watch (only the
        lease, for diagnostics uploaded after the job's own time is up)."""
        checkpoint = self.watch.lease_checkpoint if lease_only else self.watch.checkpoint
        return Transfers(self.tools.storage, self.tools.config.transfer_concurrency, checkpoint)


@dataclass
class Phase:
    """A stage of one job: publishes its state event on entry, times it on exit."""

    job: JobContext
    state: EventState

    def __enter__(self) -> None:
        self.job.tools.events.publish(self.job.job_id, self.state)
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        elapsed = time.monotonic() - self.started
        self.job.result.timings_s[self.state.value] = elapsed
        self.job.tools.metrics.phase_seconds.labels(self.state.value).observe(elapsed)
