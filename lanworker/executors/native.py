"""Runs the worker's base command plus the message's arguments as a local process group."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from lanworker.errors import CannotStart, ConfigError, InvalidMessage
from lanworker.executors.base import ExecutionRequest, ExecutionResult, JobTerms, feed_stdin
from lanworker.messages import CommandMessage
from lanworker.staging import PathMapper, Workspace
from lanworker.stops import StopReason

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
PGID_FILE = ".lanworker-pgid"
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


def kill_process_group(process: subprocess.Popen[bytes], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after the grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace_s)
    # Children may outlive the leader; the group id stays valid while any member lives.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class NativeExecutor:
    kind = "native"

    def __init__(
        self, base_command: tuple[str, ...], work_root: Path, term_grace_s: float = TERM_GRACE_S
    ) -> None:
        # Jobs run with their job dir as cwd, so a relative program path ('./tool',
        # '.venv/bin/python') is made absolute against the worker's own cwd now.
        program = check_program(base_command)
        if "/" in base_command[0]:
            base_command = (program, *base_command[1:])
        self.base_command = base_command
        self.work_root = work_root
        self.term_grace_s = term_grace_s

    def check_message(self, message: CommandMessage) -> JobTerms:
        if message.is_task:
            raise InvalidMessage("a container task (executors) needs a docker worker: worker.py docker")
        return JobTerms()

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        return str

    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        """Kill process groups that jobs of dead workers left running.

        Jobs run in their own session, so a worker killed with SIGKILL leaves them orphaned.
        Each job dir records its process group; the group is killed only if its leader
        still runs in that job dir, so a recycled pid is never hit.
        """
        for worker_id in worker_ids:
            for marker in (self.work_root / worker_id).glob(f"*/{PGID_FILE}"):
                try:
                    pgid = int(marker.read_text())
                    if os.path.realpath(f"/proc/{pgid}/cwd") != os.path.realpath(marker.parent):
                        continue
                    os.killpg(pgid, signal.SIGKILL)
                    logger.warning(
                        "killed process group %d left by worker %s",
                        pgid,
                        worker_id,
                        extra={"action": "cleanup"},
                    )
                except (OSError, ValueError):
                    continue

    def run(self, request: ExecutionRequest) -> ExecutionResult:
        argv = [*self.base_command, *request.argv]
        env = {**os.environ, **request.env}
        try:
            process = subprocess.Popen(
                argv,
                cwd=request.workspace.root,
                env=env,
                stdin=subprocess.PIPE if request.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, so a kill reaches grandchildren
            )
        except OSError as exc:
            raise CannotStart(f"command {argv[0]!r} could not start: {exc}") from exc

        (request.workspace.root / PGID_FILE).write_text(str(process.pid))
        assert process.stdout is not None and process.stderr is not None
        pumps = [
            threading.Thread(target=request.stdout.pump_from, args=(process.stdout,), daemon=True),
            threading.Thread(target=request.stderr.pump_from, args=(process.stderr,), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        feeder = None
        if process.stdin is not None:
            stdin = process.stdin
            feeder = feed_stdin(request.stdin, stdin.write, stdin.close)

        stop_reason = self._wait(process, request)
        # The job is over when its leader exits: background children it left (which could
        # hold stdout open forever, or change outputs while they upload) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        for pump in pumps:
            pump.join(timeout=self.term_grace_s)
        if feeder is not None:
            feeder.join(timeout=self.term_grace_s)
        return ExecutionResult(
            exit_code=process.returncode,
            stop_reason=stop_reason,
            details={"pid": process.pid, "argv0": argv[0]},
        )

    def _wait(self, process: subprocess.Popen[bytes], request: ExecutionRequest) -> StopReason | None:
        while True:
            try:
                process.wait(timeout=POLL_INTERVAL_S)
                return None
            except subprocess.TimeoutExpired:
                pass
            reason = request.should_stop()
            if reason is not None:
                logger.info(
                    "stopping job process group %d: %s",
                    process.pid,
                    reason.value,
                    extra={"job_id": request.job_id, "action": "stop"},
                )
                kill_process_group(process, self.term_grace_s)
                return reason
