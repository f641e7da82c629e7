"""One job from received message to outcome: parse, admit, stage, run, upload, decide.

The runner never touches the queue. It returns an Outcome (`outcomes.py`) that tells the
worker loop what to do with the message, so every queue operation and its ordering lives
in one place (`worker.py`). Every phase - staging, running, uploading - obeys the same
`JobWatch`: the job's timeout, cancel markers, the disk limit, shutdown and the lease.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from lanworker import __version__
from lanworker.core.config import WorkerConfig
from lanworker.core.errors import (
    CannotStart,
    Interrupted,
    InvalidMessage,
    JobFailed,
    TransientError,
    disk_full,
)
from lanworker.core.logs import current_job
from lanworker.core.outcomes import (
    TRANSIENT_BACKOFF_S,
    Abandon,
    DeadLetter,
    Delete,
    Outcome,
    Release,
    Requeue,
)
from lanworker.core.stops import StopReason
from lanworker.executors.base import (
    EXIT_SIGKILL,
    ExecutionRequest,
    ExecutionResult,
    Executor,
    JobTerms,
    StopCheck,
    make_sinks,
    open_stdin,
)
from lanworker.message.command import CommandMessage, decode, from_document, well_formed_id
from lanworker.message.policy import MessagePolicy
from lanworker.pipeline.staging import StagedJob, Workspace, collect_uploads, stage_inputs, upload_outputs
from lanworker.pipeline.tasks import collect_task_outputs, plan_layout, stage_task_inputs
from lanworker.queues import ReceivedMessage
from lanworker.queues.base import exhausted_reason
from lanworker.reporting.metrics import Metrics
from lanworker.reporting.results import EventPublisher, JobResult
from lanworker.storage import Checkpoint, Storage, TransferRecord
from lanworker.storage.control import CancelWatch
from lanworker.storage.safefs import TreeTooLarge, apparent_bytes, disk_usage_bytes

logger = logging.getLogger(__name__)

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


@dataclass
class Phase:
    """Times a phase and publishes its state event."""

    runner: JobRunner
    job_id: str
    timings: dict[str, float]
    name: str

    def __enter__(self) -> None:
        self.runner.events.publish(self.job_id, self.name)
        self.started = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        elapsed = time.monotonic() - self.started
        self.timings[self.name] = elapsed
        self.runner.metrics.phase_seconds.labels(self.name).observe(elapsed)


class JobRunner:
    def __init__(
        self,
        config: WorkerConfig,
        executor: Executor,
        storage: Storage,
        events: EventPublisher,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.executor = executor
        self.storage = storage
        self.events = events
        self.metrics = metrics
        self.policy = MessagePolicy.from_config(config)
        self.cancels = (
            CancelWatch(storage, config.control_url, config.cancel_check_s) if config.control_url else None
        )

    # ----------------------------------------------------------------- entry point
    def run(self, received: ReceivedMessage, should_stop: StopCheck) -> Outcome:
        job_id = received.message_id
        current_job.set(job_id)
        reply_to: str | None = None
        document: Any = None
        try:
            document = decode(received.body)
            if not isinstance(document, dict):
                raise InvalidMessage(f"message must be a JSON object, got {type(document).__name__}")
            # Known before validation, so that even an invalid message's result finds its
            # sender; both are used only when they are well-formed and allowed.
            job_id = well_formed_id(document.get("id")) or job_id
            current_job.set(job_id)
            reply_to = self._usable_reply_to(document.get("reply_to"))
            message = from_document(document)
            terms = self.executor.check_message(message)
            problems = self.policy.problems(message, terms.allow_env)
            if problems:
                raise InvalidMessage(
                    "message asks for what this worker refuses: " + "; ".join(problems), problems
                )
        except InvalidMessage as exc:
            return self._invalid(job_id, reply_to, received, exc, document)

        if received.receive_count > self.config.max_receives:  # a worker died on the last one
            return self._exhausted(job_id, message, received, "a worker stopped during the last attempt")
        self.events.publish(job_id, "received", attempt=message.attempt, receive_count=received.receive_count)
        if message.test:
            return Delete(self._listening(job_id, message), reply_to)
        if self.cancels is not None and self.cancels.requested(job_id, received.sent_at):
            result = self._result(
                job_id, message, "canceled", reason="canceled", error="canceled before it started"
            )
            outcome: Outcome = Delete(result, reply_to)
        else:
            outcome = self._execute(job_id, message, terms, should_stop, received.sent_at)
        if isinstance(outcome, Release) and received.receive_count >= self.config.max_receives:
            # The queue would drop it on the next receive without a word: a job whose
            # status never resolves. Dead-letter it here, with a final result and event.
            outcome = self._exhausted(job_id, message, received, outcome.error)
        if self.cancels is not None and isinstance(outcome, Delete | DeadLetter):
            self.cancels.clear(job_id)  # the job is over: its marker must not outlive it
        return outcome

    def _exhausted(
        self, job_id: str, message: CommandMessage, received: ReceivedMessage, last_error: str | None
    ) -> DeadLetter:
        error = exhausted_reason(received.receive_count, self.config.max_receives, last_error)
        logger.error("dead-lettered: %s", error, extra={"job_id": job_id, "action": "dead-letter"})
        result = self._result(job_id, message, "failed", reason="dead-lettered", error=error)
        return DeadLetter(result, message.reply_to)

    def _usable_reply_to(self, value: Any) -> str | None:
        if not isinstance(value, str) or self.policy.reply_to_problem(value) is not None:
            return None
        return value

    def _invalid(
        self, job_id: str, reply_to: str | None, received: ReceivedMessage, exc: InvalidMessage, document: Any
    ) -> Outcome:
        where = "" if job_id == received.message_id else f" (message {received.message_id})"
        logger.error("invalid message%s: %s", where, exc, extra={"job_id": job_id, "action": "invalid"})
        service = document.get("service") if isinstance(document, dict) else None
        result = JobResult(
            job_id=job_id,
            service=service if isinstance(service, str) else None,  # whatever could be read is kept
            state="failed",
            worker_id=self.config.worker_id,
            reason="invalid-message",
            error=str(exc),
            extra={"errors": exc.details} if exc.details else {},
        )
        return DeadLetter(result, reply_to)

    def _listening(self, job_id: str, message: CommandMessage) -> JobResult:
        return self._result(
            job_id,
            message,
            "listening",
            extra={
                "queue": message.queue,
                "executor": self.executor.kind,
                "version": __version__,
                "host": platform.node(),
            },
        )

    def _result(self, job_id: str, message: CommandMessage, state: str, **fields: Any) -> JobResult:
        return JobResult(
            job_id=job_id,
            service=message.service,
            state=state,
            worker_id=self.config.worker_id,
            attempt=message.attempt,
            **fields,
        )

    def _watch(
        self,
        job_id: str,
        message: CommandMessage,
        terms: JobTerms,
        lease: StopCheck,
        root: Path,
        sent_at: float | None,
    ) -> JobWatch:
        limit_mb = self.config.max_job_disk_mb
        cancels = self.cancels
        return JobWatch(
            lease,
            message.timeout_s or terms.timeout_s or self.config.default_timeout_s,
            (lambda: cancels.requested(job_id, sent_at)) if cancels is not None else None,
            self.config.cancel_check_s,
            (root, limit_mb * 1024 * 1024) if limit_mb else None,
        )

    # ----------------------------------------------------------------- execution
    def _execute(
        self, job_id: str, message: CommandMessage, terms: JobTerms, lease: StopCheck, sent_at: float | None
    ) -> Outcome:
        timings: dict[str, float] = {}
        workspace = Workspace(
            self.config.work_root / self.config.worker_id / f"{job_id}-{secrets.token_hex(4)}"
        )
        watch = self._watch(job_id, message, terms, lease, workspace.root, sent_at)
        result = self._result(job_id, message, "failed", timings_s=timings)
        try:
            workspace.create(for_containers=self.executor.kind == "docker")
            with Phase(self, job_id, timings, "staging"):
                staged = stage_inputs(
                    message,
                    workspace,
                    self.storage,
                    self.config.transfer_concurrency,
                    self.executor.path_mapper(workspace),
                    watch.checkpoint,
                )
                if message.is_task:
                    staged.task = plan_layout(message, workspace)
                    staged.downloads += stage_task_inputs(
                        message, staged.task, self.storage, self.config.transfer_concurrency, watch.checkpoint
                    )
            result.inputs = [record.as_dict() for record in staged.downloads]
            self.metrics.bytes_staged.inc(sum(record.size for record in staged.downloads))
            watch.checkpoint()
            with Phase(self, job_id, timings, "running"):
                execution = self._run_command(job_id, message, workspace, staged, result, watch)
            return self._after_run(job_id, message, workspace, staged, result, execution, watch)
        except Interrupted as exc:
            return self._stopped(job_id, message, result, exc.reason)
        except InvalidMessage as exc:
            logger.error("rejected: %s", exc, extra={"job_id": job_id, "action": "invalid"})
            result.reason, result.error = "invalid-message", str(exc)
            return DeadLetter(result, message.reply_to)
        except JobFailed as exc:
            logger.error("failed: %s", exc, extra={"job_id": job_id, "action": "failed"})
            result.reason, result.error = exc.reason, str(exc)
            if isinstance(exc, CannotStart):
                # It will not start on any attempt: a poison message, kept whole for a human.
                return DeadLetter(result, message.reply_to)
            return self._finish(job_id, message, result)
        except TransientError as exc:
            return self._released(job_id, exc)
        except OSError as exc:  # the work root itself, outside any storage call
            full = disk_full(exc, str(workspace.root))
            if full is None:
                raise
            return self._released(job_id, full)
        finally:
            if self.config.keep_workdir:
                logger.info(
                    "keeping work dir %s", workspace.root, extra={"job_id": job_id, "action": "cleanup"}
                )
            else:
                workspace.remove()

    def _released(self, job_id: str, exc: TransientError) -> Release:
        logger.warning(
            "transient failure (%s), releasing the message for redelivery: %s",
            exc.kind,
            exc,
            extra={"job_id": job_id, "action": "released"},
        )
        self.events.publish(job_id, "released", reason=exc.kind, error=str(exc))
        return Release(error=f"{exc.kind}: {exc}", delay_s=TRANSIENT_BACKOFF_S)

    def _after_run(
        self,
        job_id: str,
        message: CommandMessage,
        workspace: Workspace,
        staged: StagedJob,
        result: JobResult,
        execution: ExecutionResult,
        watch: JobWatch,
    ) -> Outcome:
        stop = execution.stop_reason
        if stop is not None and not stop.fails_job:
            raise Interrupted(stop)
        if watch.lease() is StopReason.LEASE_LOST:
            raise Interrupted(StopReason.LEASE_LOST)
        succeeded = execution.exit_code == 0 and stop is None
        # After a timeout the job's own time is up, but its stdout/stderr are still worth
        # uploading; after a disk-limit stop nothing is (they may be what filled the disk).
        if stop is not StopReason.DISK_LIMIT:
            with Phase(self, job_id, result.timings_s, "uploading"):
                checkpoint = watch.checkpoint if stop is None else watch.lease_checkpoint
                result.outputs = self._upload(workspace, message, staged, succeeded, result, checkpoint)
        if watch.lease() is StopReason.LEASE_LOST:
            raise Interrupted(StopReason.LEASE_LOST)
        if succeeded:
            result.state = "succeeded"
        else:
            result.reason = stop.value if stop else ("oom" if execution.oom_killed else "exit-code")
            result.error = self._failure_text(execution, message)
        return self._finish(job_id, message, result)

    def _run_command(
        self,
        job_id: str,
        message: CommandMessage,
        workspace: Workspace,
        staged: StagedJob,
        result: JobResult,
        watch: JobWatch,
    ) -> ExecutionResult:
        stdout, stderr = make_sinks(message, workspace, self.config.capture_bytes)
        request = ExecutionRequest(
            job_id=job_id,
            message=message,
            argv=staged.argv,
            workspace=workspace,
            env={**message.env, "LANWORKER_JOB_ID": job_id},
            stdin=open_stdin(message, self.storage),
            stdout=stdout,
            stderr=stderr,
            should_stop=watch,
            task=staged.task,
        )
        try:
            execution = self.executor.run(request)
        finally:
            stdout.close()
            stderr.close()
        result.exit_code = execution.exit_code
        result.stdout = stdout.as_result()
        result.stderr = stderr.as_result()
        details = dict(execution.details)
        if "executors" in details:
            result.extra["executors"] = details.pop("executors")
        if details:
            result.extra["execution"] = details
        return execution

    def _upload(
        self,
        workspace: Workspace,
        message: CommandMessage,
        staged: StagedJob,
        succeeded: bool,
        result: JobResult,
        checkpoint: Checkpoint,
    ) -> list[dict[str, Any]]:
        files = []
        for name in ("stdout", "stderr"):
            spec = getattr(message.command, name)
            if spec is not None and spec.type == "uri":
                files.append((PurePosixPath("streams", name), spec.value))
        container_paths: dict[str, str] = {}
        if succeeded or self.config.upload_on_failure or message.upload_on_failure:
            uploads = collect_uploads(staged, workspace.root, produced_only=not succeeded)
            files += uploads.files
            if staged.task is not None:
                found, skipped = collect_task_outputs(message, staged.task, produced_only=not succeeded)
                files += [(upload.relative, upload.url) for upload in found]
                container_paths = {upload.url: upload.container_path for upload in found}
                uploads.skipped += skipped
            if uploads.skipped:
                result.extra["skipped_outputs"] = uploads.skipped
                logger.warning(
                    "skipped %d output entries that are not regular single-link files: %s",
                    len(uploads.skipped),
                    "; ".join(uploads.skipped[:5]),
                    extra={"action": "uploading"},
                )
        self._check_output_size(workspace.root, files)
        records: list[TransferRecord] = upload_outputs(
            files, workspace.root, self.storage, self.config.transfer_concurrency, checkpoint
        )
        self.metrics.bytes_uploaded.inc(sum(record.size for record in records))
        documents = [record.as_dict() for record in records]
        for document in documents:
            if document["uri"] in container_paths:
                document["path"] = container_paths[document["uri"]]
        return documents

    def _check_output_size(self, root: Path, files: list[tuple[PurePosixPath, str]]) -> None:
        """--max-output-mb: the outputs' apparent sizes (a sparse file counts whole), before
        any is uploaded."""
        if self.config.max_output_mb is None:
            return
        limit = self.config.max_output_mb * 1024 * 1024
        total = 0
        for relative, _ in files:
            with contextlib.suppress(OSError):  # missing: the upload names it
                total += apparent_bytes(os.lstat(root / relative))
        if total > limit:
            raise TreeTooLarge(
                f"outputs add up to {total} bytes, more than --max-output-mb {self.config.max_output_mb}"
            )

    def _failure_text(self, execution: ExecutionResult, message: CommandMessage) -> str:
        stop = execution.stop_reason
        if stop is StopReason.TIMEOUT:
            timeout = message.timeout_s or self.config.default_timeout_s or "its"
            return f"job exceeded its timeout ({timeout} s) and was stopped"
        if stop is not None:
            return _STOP_TEXT[stop]
        if execution.oom_killed:
            return f"command was killed for exceeding its memory limit (exit code {execution.exit_code})"
        if execution.exit_code == EXIT_SIGKILL and execution.memory_limit_mb is not None:
            # The engine can miss an OOM kill of a container that exits at once after it.
            return (
                f"command was killed by SIGKILL (exit code {EXIT_SIGKILL}): most often its memory limit "
                f"({execution.memory_limit_mb} MB), though no OOM kill was recorded"
            )
        return f"command exited with code {execution.exit_code}"

    def _stopped(
        self, job_id: str, message: CommandMessage, result: JobResult, reason: StopReason
    ) -> Outcome:
        if reason is StopReason.LEASE_LOST:
            logger.warning(
                "lost its message lease; leaving the message for redelivery",
                extra={"job_id": job_id, "action": "abandon"},
            )
            return Abandon()
        if reason is StopReason.CANCELED:
            result.state, result.reason, result.error = "canceled", "canceled", "canceled while running"
            self.events.publish(job_id, "canceled", reason="canceled", result=result.summary())
            return Delete(result, message.reply_to)
        if reason.fails_job:
            result.reason, result.error = reason.value, _STOP_TEXT[reason]
            return self._finish(job_id, message, result)
        self.events.publish(job_id, "released", reason=reason.value)
        return Release()

    def _finish(self, job_id: str, message: CommandMessage, result: JobResult) -> Outcome:
        """A succeeded or failed job; a failure matching the retry policy is re-queued."""
        policy = message.retry
        retryable = result.state == "failed" and policy is not None and message.attempt < policy.attempts
        if retryable and policy and (not policy.on_exit_codes or result.exit_code in policy.on_exit_codes):
            document = dict(message.raw, id=job_id, attempt=message.attempt + 1)
            result.state = "retrying"
            result.extra["next_attempt"] = message.attempt + 1
            self.events.publish(job_id, "retrying", attempt=message.attempt, next_attempt=message.attempt + 1)
            return Delete(result, message.reply_to, Requeue(json.dumps(document), int(policy.delay_s)))
        self.events.publish(
            job_id, result.state, exit_code=result.exit_code, reason=result.reason, result=result.summary()
        )
        return Delete(result, message.reply_to)


_STOP_TEXT = {
    StopReason.TIMEOUT: "job exceeded its timeout and was stopped",
    StopReason.MAX_RUNTIME: "job exceeded --max-job-runtime-s and was stopped",
    StopReason.DISK_LIMIT: "job dir grew beyond --max-job-disk-mb and the job was stopped",
}
