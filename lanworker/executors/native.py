"""Runs the worker's base command plus the message's arguments as a local process group."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from lanworker.core.errors import CannotStart, ConfigError, InvalidMessage
from lanworker.core.stops import StopReason
from lanworker.executors.base import (
    CapturedStream,
    ExecutionRequest,
    ExecutionResult,
    JobTerms,
    feed_stdin,
)
from lanworker.message.command import CommandMessage, ContainerTask
from lanworker.pipeline.workspace import PathMapper, Workspace
from lanworker.storage.ranged import CHUNK_BYTES

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
TERM_GRACE_S = 5.0


def parse_base_command(tokens: Sequence[str]) -> tuple[str, ...]:
    """The worker's command from its command line, in any of three forms.

    - `-- CMD ARGS...` (or `CMD ARGS...`): taken literally after `--`.
    - one JSON array token, as the lanlytics README quotes it: `'["python", "my_script.py"]'`.
    - what bash leaves of the unquoted array: `[python,` `my_script.py]`.
    """
    if tokens and tokens[0] == "--":
        return tuple(tokens[1:])
    joined = " ".join(tokens).strip()
    if not (joined.startswith("[") and joined.endswith("]")):
        return tuple(tokens)
    try:
        parsed = json.loads(joined)
    except ValueError:
        parsed = [part.strip().strip("'\"") for part in joined[1:-1].split(",")]
    if (
        not isinstance(parsed, list)
        or not parsed
        or not all(isinstance(part, str) and part for part in parsed)
    ):
        raise ConfigError(f"cannot read the command {joined!r}: expected a list of non-empty strings")
    return tuple(parsed)


def check_program(base_command: Sequence[str]) -> str:
    """The absolute path of the program, or ConfigError: a worker that can never start its
    command must not start at all (it would consume and dead-letter the queue's work)."""
    if not base_command:
        raise ConfigError("native mode needs a command: worker.py native -- CMD [ARGS...]")
    program = base_command[0]
    if "/" in program:
        found: str | None = os.path.abspath(program)
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):  # type: ignore[arg-type]
            raise ConfigError(f"the command's program {program!r} is not an executable file")
    else:
        found = shutil.which(program)
        if found is None:
            raise ConfigError(
                f"the command's program {program!r} is not on PATH ({os.environ.get('PATH', '')})"
            )
    assert found is not None
    return found


def launch_relative(arguments: Sequence[str]) -> tuple[str, ...]:
    """Each argument that names an existing file or directory relative to the worker's own
    working directory, as an absolute path; the others as they are (options, words)."""
    return tuple(
        os.path.abspath(token)
        if token and not token.startswith("-") and not os.path.isabs(token) and os.path.exists(token)
        else token
        for token in arguments
    )


def job_process_groups(worker_dir: Path) -> set[int]:
    """The process groups of processes whose working directory lies under worker_dir
    (never this process's own group)."""
    prefix = os.path.realpath(worker_dir) + os.sep
    own = os.getpgid(0)
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            if cwd.startswith(prefix):
                found.add(os.getpgid(int(entry.name)))
        except OSError:
            continue  # gone, or not ours to look at
    found.discard(own)
    return found


class NativeExecutor:
    kind = "native"

    def __init__(
        self, base_command: tuple[str, ...], work_root: Path, term_grace_s: float = TERM_GRACE_S
    ) -> None:
        # Jobs run with their job dir as cwd, so the command means what it meant in the
        # shell that started the worker: a relative program path ('./tool') and arguments
        # that name files there ('my_script.py') are made absolute against that cwd now.
        program = check_program(base_command)
        if "/" in base_command[0]:
            base_command = (program, *base_command[1:])
        self.base_command = (base_command[0], *launch_relative(base_command[1:]))
        self.program = program  # found once: no PATH search (and failed execs) per job
        # The worker's environment as bytes, taken once, instead of decoding os.environ
        # and encoding it back for every job.
        self.environment = dict(os.environb)
        self.work_root = work_root
        self.term_grace_s = term_grace_s

    def check_message(self, message: CommandMessage) -> JobTerms:
        if isinstance(message.work, ContainerTask):
            raise InvalidMessage("a container task (executors) needs a docker worker: worker.py docker")
        return JobTerms()

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        return str

    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        """Kill process groups that jobs of dead workers left running.

        Jobs run in their own session, so a worker killed with SIGKILL leaves them orphaned.
        They are found by their working directory, which is their job dir under the dead
        worker's dir; nothing is written per job to find them.
        """
        for worker_id in worker_ids:
            for pgid in job_process_groups(self.work_root / worker_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
                    logger.warning(
                        "killed process group %d left by worker %s",
                        pgid,
                        worker_id,
                        extra={"action": "cleanup"},
                    )

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        argv = [*self.base_command, *request.argv]
        env = {**self.environment, **{os.fsencode(k): os.fsencode(v) for k, v in request.env.items()}}
        stdout_read, stdout_write = os.pipe2(os.O_CLOEXEC)
        stderr_read, stderr_write = os.pipe2(os.O_CLOEXEC)
        stdin_read, stdin_write = os.pipe2(os.O_CLOEXEC) if request.stdin is not None else (_devnull(), -1)
        try:
            # Plain descriptors, not subprocess.PIPE: no file objects (and no /dev/null
            # opened) per job; the parent keeps only the read ends.
            process = subprocess.Popen(
                argv,
                executable=self.program,
                cwd=request.workspace.root,
                env=env,
                stdin=stdin_read,
                stdout=stdout_write,
                stderr=stderr_write,
                start_new_session=True,  # its own process group, so a kill reaches grandchildren
            )
        except OSError as exc:
            for fd in (stdout_read, stderr_read, stdin_write):
                if fd >= 0:
                    os.close(fd)
            raise CannotStart(f"command {argv[0]!r} could not start: {exc}") from exc
        finally:
            os.close(stdout_write)
            os.close(stderr_write)
            if request.stdin is not None:
                os.close(stdin_read)

        feeder = None
        if request.stdin is not None:
            stdin = open(stdin_write, "wb")  # noqa: SIM115 - the feeder thread closes it
            feeder = feed_stdin(request.stdin, stdin.write, stdin.close)
        stop_reason = _Supervisor(process, request, self.term_grace_s, stdout_read, stderr_read).run()
        if feeder is not None:
            feeder.join(timeout=self.term_grace_s)
        return ExecutionResult(
            exit_code=process.returncode,
            stop_reason=stop_reason,
            details={"pid": process.pid, "argv0": argv[0]},
        )


@cache
def _devnull() -> int:
    """One read-only /dev/null for the stdin of every job that has none."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


class _Supervisor:
    """Runs one job's process group to its end from the job's own thread: no extra threads.

    One `poll` waits on the leader's exit (a pidfd, so the exit is seen at once, and the
    leader is reaped only once it says so) and on stdout and stderr, which are copied into
    their sinks as they arrive. The stop check is asked every POLL_INTERVAL_S; a stop sends
    SIGTERM to the group and SIGKILL after the grace period, while output keeps being
    drained. When the leader exits, the rest of its group is killed (background children
    could hold stdout open forever, or change outputs while they upload) and the pipes are
    read to their end. Whatever goes wrong, the group is killed and the leader reaped
    before `run` returns.
    """

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        request: ExecutionRequest,
        grace_s: float,
        stdout_fd: int,
        stderr_fd: int,
    ) -> None:
        self.process = process
        self.pipes = {stdout_fd: request.stdout, stderr_fd: request.stderr}  # closed by run()
        self.request = request
        self.grace_s = grace_s
        self.poller = select.poll()  # no kernel object to make and close per job, as epoll has
        self.pidfd: int | None = None
        self.sinks: dict[int, CapturedStream] = {}
        self.stop_reason: StopReason | None = None
        self.kill_at: float | None = None  # when SIGKILL follows the SIGTERM of a stop

    def run(self) -> StopReason | None:
        killed = False
        try:
            for fd, sink in self.pipes.items():
                self.poller.register(fd, select.POLLIN)
                self.sinks[fd] = sink
            with contextlib.suppress(AttributeError, OSError):  # without pidfds the exit is polled
                self.pidfd = os.pidfd_open(self.process.pid)
                self.poller.register(self.pidfd, select.POLLIN)
            self._until_exit()
            if self.pidfd is not None:
                self.poller.unregister(self.pidfd)  # it stays readable: the drain waits on the pipes alone
            _signal_group(self.process.pid, signal.SIGKILL)
            killed = True  # a killed group cannot grow: its members die before they can fork
            self._drain(time.monotonic() + self.grace_s)
        finally:
            # Until the leader is reaped its pid, and so its group id, cannot be reused.
            if not killed:
                _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait()
            if self.pidfd is not None:
                os.close(self.pidfd)
            for fd in self.pipes:
                os.close(fd)
            for sink in self.sinks.values():
                sink.close()
        return self.stop_reason

    def _until_exit(self) -> None:
        next_check = time.monotonic() + POLL_INTERVAL_S
        while True:
            timeout_s = max(0.0, next_check - time.monotonic())
            exited = self.pidfd is None  # without a pidfd, ask (every 10 ms at most)
            for fd, _ in self.poller.poll(
                1000 * (timeout_s if self.pidfd is not None else min(timeout_s, 0.01))
            ):
                if fd == self.pidfd:
                    exited = True
                else:
                    self._copy(fd)
            if exited and self.process.poll() is not None:
                return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + POLL_INTERVAL_S
                self._check_stop(now)

    def _check_stop(self, now: float) -> None:
        if self.kill_at is not None:
            if now >= self.kill_at:
                _signal_group(self.process.pid, signal.SIGKILL)
            return
        reason = self.request.should_stop()
        if reason is None:
            return
        logger.info(
            "stopping job process group %d: %s",
            self.process.pid,
            reason.value,
            extra={"job_id": self.request.job_id, "action": "stop"},
        )
        self.stop_reason = reason
        self.kill_at = now + self.grace_s
        _signal_group(self.process.pid, signal.SIGTERM)

    def _drain(self, deadline: float) -> None:
        """Read stdout and stderr to their end (their writers are dead), within the deadline."""
        while self.sinks and (remaining_s := deadline - time.monotonic()) > 0:
            for fd, _ in self.poller.poll(1000 * remaining_s):
                if fd in self.sinks:
                    self._copy(fd)

    def _copy(self, fd: int) -> None:
        sink = self.sinks[fd]
        try:
            chunk = os.read(fd, CHUNK_BYTES)
        except OSError as exc:
            logger.debug("%s pipe ended: %s", sink.name, exc)
            chunk = b""
        if not chunk:
            self.poller.unregister(fd)
            del self.sinks[fd]
            sink.close()
            return
        try:
            sink.write(chunk)
        except OSError as exc:  # a full disk under a spooled stream: drop, keep the pipe moving
            logger.warning("%s lost output: %s", sink.name, exc, extra={"job_id": self.request.job_id})


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
