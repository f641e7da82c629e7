"""The executor interface, and the stream plumbing both executors share."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from lanworker.core.stops import StopReason
from lanworker.message.command import CommandMessage
from lanworker.pipeline.workspace import PathMapper, TaskLayout, Workspace
from lanworker.storage.ranged import CHUNK_BYTES

logger = logging.getLogger(__name__)

# What asks a running job to stop early: a StopReason, or None to keep going. The job
# runner's check covers the job's timeout, cancel markers, the disk limit, shutdown and
# the lease; executors only poll it and stop the command when it answers.
StopCheck = Callable[[], "StopReason | None"]


@dataclass(frozen=True)
class JobTerms:
    """What an executor grants a message it accepts."""

    timeout_s: float | None = None  # the service's default timeout, if it has one
    allow_env: tuple[str, ...] = ()  # dangerous env names the service allows


class CapturedStream:
    """stdout or stderr of a job: kept in memory up to a cap, or spooled to a file.

    Spooled streams are uploaded after the run, so a slow S3 never back-pressures the
    command and the upload can be retried as a whole.
    """

    def __init__(
        self, name: str, cap_bytes: int, spool_path: Path | None = None, keep_tail: bool = False
    ) -> None:
        self.name = name
        self.cap_bytes = cap_bytes
        self.spool_path = spool_path
        self.keep_tail = keep_tail  # keep the last cap_bytes instead of the first
        self.total_bytes = 0
        self._buffer = bytearray()
        self._spool: IO[bytes] | None = spool_path.open("wb") if spool_path else None

    def write(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if self._spool is not None:
            self._spool.write(data)
            return
        if self.keep_tail:
            self._buffer.extend(data[-self.cap_bytes :])
            del self._buffer[: max(0, len(self._buffer) - self.cap_bytes)]
            return
        room = self.cap_bytes - len(self._buffer)
        if room > 0:
            self._buffer.extend(data[:room])

    def tail_text(self) -> str:
        return self._buffer.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    @property
    def truncated(self) -> bool:
        return self._spool is None and self.total_bytes > len(self._buffer)

    def as_result(self) -> dict[str, Any]:
        if self._spool is not None:
            return {"bytes": self.total_bytes, "spooled": True}
        return {
            "text": self._buffer.decode("utf-8", errors="replace"),
            "bytes": self.total_bytes,
            "truncated": self.truncated,
        }


@dataclass
class ExecutionRequest:
    job_id: str
    message: CommandMessage
    argv: list[str]
    workspace: Workspace
    env: dict[str, str]
    stdin: IO[bytes] | None
    stdout: CapturedStream
    stderr: CapturedStream
    should_stop: StopCheck
    task: TaskLayout | None = None  # a container task's mounts (messages with executors)


EXIT_SIGKILL = 128 + 9  # how a shell, or the engine, reports a process killed by SIGKILL


@dataclass
class ExecutionResult:
    exit_code: int | None
    stop_reason: StopReason | None = None
    oom_killed: bool = False
    memory_limit_mb: int | None = None  # the limit the command ran under, if it had one
    details: dict[str, Any] = field(default_factory=dict)


class Executor(Protocol):
    kind: str

    def check_message(self, message: CommandMessage) -> JobTerms:
        """Raise InvalidMessage if this executor must refuse the message (e.g. image not allowed)."""

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        """How a local path in the job dir is named to the command."""

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        """Run to completion or until should_stop answers; never raises for a failing command.

        Raises CannotStart when the command cannot be started at all, TransientError when
        the engine is unreachable.
        """

    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        """Remove what stopped workers with these ids (this one included) left behind."""


def feed_stdin(
    source: IO[bytes] | None, sink: Callable[[bytes], Any], close: Callable[[], Any]
) -> threading.Thread:
    """Copy stdin into the command in a thread, chunk by chunk, never whole in memory."""

    def copy() -> None:
        try:
            if source is not None:
                while chunk := source.read(CHUNK_BYTES):
                    sink(chunk)
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("command closed stdin early")
        except Exception as exc:
            logger.warning("stdin stream failed: %s", exc, extra={"action": "stdin"})
        finally:
            with contextlib.suppress(OSError):
                close()
            if source is not None:
                source.close()

    thread = threading.Thread(target=copy, name="stdin-feeder", daemon=True)
    thread.start()
    return thread
