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

from lanworker.errors import JobFailed
from lanworker.executors.base import ExecutionRequest, ExecutionResult, feed_stdin
from lanworker.messages import CommandMessage
from lanworker.staging import PathMapper, Workspace

logger = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.1
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

    def __init__(self, base_command: tuple[str, ...], term_grace_s: float = TERM_GRACE_S) -> None:
        self.base_command = base_command
        self.term_grace_s = term_grace_s

    def check_message(self, message: CommandMessage) -> None:
        return None

    def path_mapper(self, workspace: Workspace) -> PathMapper:
        return str

    def cleanup_stale(self, worker_ids: Sequence[str]) -> None:
        # Native jobs run in their own session; a crashed worker's children were in its
        # process tree and systemd's KillMode=control-group ends them.
        return None

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
