"""One job from received message to outcome: parse, stage, run, upload, decide.

The runner never touches the queue. It returns an Outcome that tells the worker loop
what to do with the message (delete, dead-letter, release, or leave it alone), so every
queue operation and its ordering lives in one place (`worker.py`).
"""

from __future__ import annotations

import json
import logging
import platform
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lanworker import __version__
from lanworker.config import WorkerConfig
from lanworker.errors import InvalidMessage, JobFailed, TransientError
from lanworker.executors.base import ExecutionRequest, ExecutionResult, Executor, make_sinks, open_stdin
from lanworker.logs import current_job
from lanworker.messages import CommandMessage, decode, from_document
from lanworker.metrics import Metrics
from lanworker.queues import ReceivedMessage
from lanworker.results import EventPublisher, JobResult
from lanworker.staging import StagedJob, Workspace, collect_uploads, stage_inputs, upload_outputs
from lanworker.storage import Storage, TransferRecord

logger = logging.getLogger(__name__)

DELETE = "delete"
DEAD_LETTER = "dead-letter"
RELEASE = "release"
ABANDON = "abandon"  # the lease is gone: touching the message now would use a stale receipt
# A message released after an infrastructure failure waits this long before it is seen
# again, so a persistent outage does not become a hot receive-fail-release loop.
TRANSIENT_BACKOFF_S = 5


@dataclass
class Outcome:
    action: str
    result: JobResult | None = None
    reply_to: str | None = None
    requeue_body: str | None = None
    requeue_delay_s: int = 0
    error: str | None = None  # why a released message was released
    release_delay_s: int = 0


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


def cancel_marker(control_url: str, job_id: str) -> str:
    return f"{control_url.rstrip('/')}/cancel/{job_id}"


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

    def is_canceled(self, job_id: str) -> bool:
        if not self.config.control_url:
            return False
        try:
            return self.storage.exists(cancel_marker(self.config.control_url, job_id))
        except Exception as exc:
            logger.warning("cannot check cancel marker of %s: %s", job_id, exc, extra={"job_id": job_id})
            return False

    def clear_cancel(self, job_id: str) -> None:
        if self.config.control_url:
            try:
                self.storage.delete(cancel_marker(self.config.control_url, job_id))
            except Exception as exc:
                logger.warning("cannot remove cancel marker of %s: %s", job_id, exc, extra={"job_id": job_id})

    # ----------------------------------------------------------------- entry point
    def run(self, received: ReceivedMessage, should_stop: Callable[[], str | None]) -> Outcome:
        job_id = received.message_id
        current_job.set(job_id)
        reply_to: str | None = None
        try:
            document = decode(received.body)
            if not isinstance(document, dict):
                raise InvalidMessage(f"message must be a JSON object, got {type(document).__name__}")
            # Known before validation, so that even an invalid message's result finds its sender.
            job_id = str(document.get("id") or job_id)
            current_job.set(job_id)
            reply_to = document["reply_to"] if isinstance(document.get("reply_to"), str) else None
            message = from_document(document)
            self.executor.check_message(message)
        except InvalidMessage as exc:
            return self._invalid(job_id, reply_to, received, exc)

        self.events.publish(job_id, "received", attempt=message.attempt, receive_count=received.receive_count)
        if message.test:
            return Outcome(DELETE, self._listening(job_id, message), reply_to)
        if self.is_canceled(job_id):
            self.clear_cancel(job_id)
            result = self._result(
                job_id, message, "canceled", reason="canceled", error="canceled before it started"
            )
            return Outcome(DELETE, result, reply_to)
        return self._execute(job_id, message, self._with_cancel_check(job_id, should_stop))

    def _with_cancel_check(
        self, job_id: str, should_stop: Callable[[], str | None]
    ) -> Callable[[], str | None]:
        """Adds the cancel marker to the stop reasons, looked up once per heartbeat interval."""
        if not self.config.control_url:
            return should_stop
        interval = self.config.effective_heartbeat_s
        state = {"checked_at": time.monotonic(), "canceled": False}

        def check() -> str | None:
            reason = should_stop()
            if reason is not None:
                return reason
            if not state["canceled"] and time.monotonic() - float(state["checked_at"]) >= interval:
                state["checked_at"] = time.monotonic()
                state["canceled"] = self.is_canceled(job_id)
            return "canceled" if state["canceled"] else None

        return check

    def _invalid(
        self, job_id: str, reply_to: str | None, received: ReceivedMessage, exc: InvalidMessage
    ) -> Outcome:
        logger.error(
            "invalid message %s: %s", received.message_id, exc, extra={"job_id": job_id, "action": "invalid"}
        )
        result = JobResult(
            job_id=job_id,
            service=None,
            state="failed",
            worker_id=self.config.worker_id,
            reason="invalid-message",
            error=str(exc),
            extra={"errors": exc.details} if exc.details else {},
        )
        return Outcome(DEAD_LETTER, result, reply_to)

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

    # ----------------------------------------------------------------- execution
    def _execute(
        self, job_id: str, message: CommandMessage, should_stop: Callable[[], str | None]
    ) -> Outcome:
        timings: dict[str, float] = {}
        workspace = Workspace(
            self.config.work_root / self.config.worker_id / f"{job_id}-{secrets.token_hex(4)}",
            allow_local_files=self.config.local_files_allowed,
        )
        result = self._result(job_id, message, "failed", timings_s=timings)
        try:
            workspace.create()
            with Phase(self, job_id, timings, "staging"):
                staged = stage_inputs(
                    message,
                    workspace,
                    self.storage,
                    self.config.transfer_concurrency,
                    self.executor.path_mapper(workspace),
                )
            result.inputs = [record.as_dict() for record in staged.downloads]
            self.metrics.bytes_staged.inc(sum(record.size for record in staged.downloads))
            stop = should_stop()
            if stop is not None:
                return self._stopped(job_id, message, result, stop)
            with Phase(self, job_id, timings, "running"):
                execution = self._run_command(job_id, message, workspace, staged, result, should_stop)
            if execution.stop_reason in ("shutdown", "lease-lost", "canceled"):
                return self._stopped(job_id, message, result, execution.stop_reason)
            if should_stop() == "lease-lost":
                return self._stopped(job_id, message, result, "lease-lost")
            succeeded = execution.exit_code == 0 and execution.stop_reason is None
            with Phase(self, job_id, timings, "uploading"):
                result.outputs = self._upload(workspace, message, staged, succeeded)
            if should_stop() == "lease-lost":
                return self._stopped(job_id, message, result, "lease-lost")
            if succeeded:
                result.state = "succeeded"
            else:
                result.reason = execution.stop_reason or (
                    "oom" if execution.details.get("oom_killed") else "exit-code"
                )
                result.error = self._failure_text(execution, message)
            return self._finish(job_id, message, result)
        except InvalidMessage as exc:
            logger.error("job %s rejected: %s", job_id, exc, extra={"job_id": job_id, "action": "invalid"})
            result.reason, result.error = "invalid-message", str(exc)
            return Outcome(DEAD_LETTER, result, message.reply_to)
        except JobFailed as exc:
            logger.error("job %s failed: %s", job_id, exc, extra={"job_id": job_id, "action": "failed"})
            result.reason, result.error = exc.reason, str(exc)
            if exc.reason == "cannot-start":
                # It will not start on any attempt: a poison message, kept whole for a human.
                return Outcome(DEAD_LETTER, result, message.reply_to)
            return self._finish(job_id, message, result)
        except TransientError as exc:
            logger.warning(
                "job %s hit a transient failure, releasing it for redelivery: %s",
                job_id,
                exc,
                extra={"job_id": job_id, "action": "released"},
            )
            self.events.publish(job_id, "released", error=str(exc))
            return Outcome(RELEASE, error=str(exc), release_delay_s=TRANSIENT_BACKOFF_S)
        finally:
            if self.config.keep_workdir:
                logger.info(
                    "keeping work dir %s", workspace.root, extra={"job_id": job_id, "action": "cleanup"}
                )
            else:
                workspace.remove()

    def _run_command(
        self,
        job_id: str,
        message: CommandMessage,
        workspace: Workspace,
        staged: StagedJob,
        result: JobResult,
        should_stop: Callable[[], str | None],
    ) -> ExecutionResult:
        stdout, stderr = make_sinks(message, workspace, self.config.capture_bytes)
        timeout_s = message.timeout_s or self.config.default_timeout_s
        request = ExecutionRequest(
            job_id=job_id,
            message=message,
            argv=staged.argv,
            workspace=workspace,
            env={**message.env, "LANWORKER_JOB_ID": job_id},
            stdin=open_stdin(message, self.storage),
            stdout=stdout,
            stderr=stderr,
            timeout_s=timeout_s,
            should_stop=should_stop,
        )
        try:
            execution = self.executor.run(request)
        finally:
            stdout.close()
            stderr.close()
        result.exit_code = execution.exit_code
        result.stdout = stdout.as_result()
        result.stderr = stderr.as_result()
        if execution.details:
            result.extra["execution"] = execution.details
        return execution

    def _upload(
        self, workspace: Workspace, message: CommandMessage, staged: StagedJob, succeeded: bool
    ) -> list[dict[str, Any]]:
        pairs = []
        for name in ("stdout", "stderr"):
            spec = getattr(message.command, name)
            if spec is not None and spec.type == "uri":
                pairs.append((workspace.streams / name, spec.value))
        records: list[TransferRecord] = upload_outputs(pairs, self.storage, self.config.transfer_concurrency)
        if succeeded or self.config.upload_on_failure:
            outputs = collect_uploads(staged) if succeeded else self._produced_outputs(staged)
            records += upload_outputs(outputs, self.storage, self.config.transfer_concurrency)
        self.metrics.bytes_uploaded.inc(sum(record.size for record in records))
        return [record.as_dict() for record in records]

    @staticmethod
    def _produced_outputs(staged: StagedJob) -> list[Any]:
        """After a failure, upload whatever outputs exist without failing on the missing ones."""
        try:
            return collect_uploads(staged)
        except JobFailed:
            present = [u for u in staged.uploads if u.local.exists() and not u.local.is_symlink()]
            return collect_uploads(StagedJob(staged.argv, present, staged.output_prefixes))

    @staticmethod
    def _failure_text(execution: ExecutionResult, message: CommandMessage) -> str:
        if execution.stop_reason == "timeout":
            return f"command timed out after {message.timeout_s or 'the default'} s and was killed"
        if execution.stop_reason == "max-runtime":
            return "job exceeded --max-job-runtime-s and was stopped"
        if execution.details.get("oom_killed"):
            return f"command was killed for exceeding its memory limit (exit code {execution.exit_code})"
        return f"command exited with code {execution.exit_code}"

    def _stopped(self, job_id: str, message: CommandMessage, result: JobResult, reason: str) -> Outcome:
        if reason == "lease-lost":
            logger.warning(
                "job %s lost its message lease; leaving the message for redelivery",
                job_id,
                extra={"job_id": job_id, "action": "abandon"},
            )
            return Outcome(ABANDON)
        if reason == "canceled":
            self.clear_cancel(job_id)
            result.state, result.reason, result.error = "canceled", "canceled", "canceled while running"
            return Outcome(DELETE, result, message.reply_to)
        if reason == "max-runtime":
            result.reason, result.error = "max-runtime", "job exceeded --max-job-runtime-s and was stopped"
            return self._finish(job_id, message, result)
        self.events.publish(job_id, "released", reason=reason)
        return Outcome(RELEASE)

    def _finish(self, job_id: str, message: CommandMessage, result: JobResult) -> Outcome:
        """A succeeded or failed job; a failure matching the retry policy is re-queued."""
        policy = message.retry
        retryable = result.state == "failed" and policy is not None and message.attempt < policy.attempts
        if retryable and policy and (not policy.on_exit_codes or result.exit_code in policy.on_exit_codes):
            document = dict(message.raw, id=job_id, attempt=message.attempt + 1)
            result.state = "retrying"
            result.extra["next_attempt"] = message.attempt + 1
            self.events.publish(job_id, "retrying", attempt=message.attempt, next_attempt=message.attempt + 1)
            return Outcome(DELETE, result, message.reply_to, json.dumps(document), int(policy.delay_s))
        self.events.publish(job_id, result.state, exit_code=result.exit_code, reason=result.reason)
        return Outcome(DELETE, result, message.reply_to)
