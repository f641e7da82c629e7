"""Runs the worker's base command plus the message's arguments as a local process group."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from lanworker.errors import JobFailed
from lanworker.executors.base import ExecutionRequest, ExecutionResult, feed_stdin
from lanworker.messages import CommandMessage
from lanworker.staging import PathMapper, Workspace

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
PGID_FILE = ".lanworker-pgid"
TERM_GRACE_S = 5.0


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
        program = base_command[0] if base_command else ""
        if "/" in program and not os.path.isabs(program):
            base_command = (os.path.abspath(program), *base_command[1:])
        self.base_command = base_command
        self.work_root = work_root
        self.term_grace_s = term_grace_s

    def check_message(self, message: CommandMessage) -> None:
        return None

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
        started = time.monotonic()
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
            raise JobFailed(f"command {argv[0]!r} could not start: {exc}", reason="cannot-start") from exc

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

        stop_reason = self._wait(process, request, started)
        for pump in pumps:
            pump.join()
        if feeder is not None:
            feeder.join(timeout=self.term_grace_s)
        return ExecutionResult(
            exit_code=process.returncode,
            stop_reason=stop_reason,
            details={"pid": process.pid, "argv0": argv[0]},
        )

    def _wait(
        self, process: subprocess.Popen[bytes], request: ExecutionRequest, started: float
    ) -> str | None:
        deadline = started + request.timeout_s if request.timeout_s else None
        while True:
            try:
                process.wait(timeout=POLL_INTERVAL_S)
                return None
            except subprocess.TimeoutExpired:
                pass
            reason = request.should_stop()
            if reason is None and deadline is not None and time.monotonic() >= deadline:
                reason = "timeout"
            if reason is not None:
                logger.info(
                    "stopping job process group %d: %s",
                    process.pid,
                    reason,
                    extra={"job_id": request.job_id, "action": "stop"},
                )
                kill_process_group(process, self.term_grace_s)
                return reason
