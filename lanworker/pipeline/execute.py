"""Execute: the command or the container task, with its streams, until it ends or the
job's watch stops it. The executor does the running; this stage wires the job to it and
records what came back."""

from __future__ import annotations

import io
from typing import IO, Literal

from lanworker.core.states import EventState
from lanworker.executors.base import CapturedStream, ExecutionRequest, ExecutionResult
from lanworker.message.command import CommandMessage, stream_spec
from lanworker.pipeline.context import JobContext, Phase
from lanworker.pipeline.workspace import Workspace
from lanworker.storage import Storage


def execute(job: JobContext) -> ExecutionResult:
    """Runs the job's command; the result gets its exit code, streams and execution details.
    The `running` event comes first, before stdin is opened (it may be an S3 object)."""
    with Phase(job, EventState.RUNNING):
        return _run(job)


def _run(job: JobContext) -> ExecutionResult:
    stdout, stderr = make_sinks(job.message, job.workspace, job.tools.config.capture_bytes)
    request = ExecutionRequest(
        job_id=job.job_id,
        message=job.message,
        argv=job.staged.argv,
        workspace=job.workspace,
        env={**job.message.env, "LANWORKER_JOB_ID": job.job_id},
        stdin=open_stdin(job.message, job.tools.storage),
        stdout=stdout,
        stderr=stderr,
        should_stop=job.watch,
        task=job.staged.task,
    )
    try:
        execution = job.tools.executor.run(request)
    finally:
        stdout.close()
        stderr.close()
    result = job.result
    result.exit_code = execution.exit_code
    result.stdout = stdout.as_result()
    result.stderr = stderr.as_result()
    details = dict(execution.details)
    if "executors" in details:
        result.extra["executors"] = details.pop("executors")
    if details:
        result.extra["execution"] = details
    return execution


def open_stdin(message: CommandMessage, storage: Storage) -> IO[bytes] | None:
    """A command's stdin (a container task's executors read theirs from files)."""
    stdin = stream_spec(message, "stdin")
    if stdin is None:
        return None
    if stdin.type == "pipe":
        return io.BytesIO((stdin.value or "").encode("utf-8"))
    assert stdin.value is not None
    return storage.open_read(stdin.value)


def make_sinks(
    message: CommandMessage, workspace: Workspace, cap_bytes: int
) -> tuple[CapturedStream, CapturedStream]:
    def sink(name: Literal["stdout", "stderr"]) -> CapturedStream:
        spec = stream_spec(message, name)
        spool = workspace.streams / name if spec is not None and spec.type == "uri" else None
        if spool is not None:
            spool.parent.mkdir(exist_ok=True)
        return CapturedStream(name, cap_bytes, spool)

    return sink("stdout"), sink("stderr")
