"""The native supervisor on real process groups: output copied as it comes, the leader
reaped once its pidfd says it exited (or by polling where pidfds are missing), a stop that
reaches the whole group, and a background child that cannot keep a job running."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lanworker.core.stops import StopReason
from lanworker.executors.base import CapturedStream, ExecutionRequest, ExecutionResult
from lanworker.executors.native import NativeExecutor


def run(tmp_path: Path, script: str, should_stop: Any = lambda: None) -> tuple[ExecutionResult, str, str]:
    executor = NativeExecutor(("sh", "-c"), tmp_path, term_grace_s=2.0)
    stdout, stderr = CapturedStream("stdout", 1 << 20), CapturedStream("stderr", 1 << 20)
    request = ExecutionRequest(
        job_id="j1",
        message=None,  # type: ignore[arg-type]  # the native executor never reads it
        argv=[script],
        workspace=SimpleNamespace(root=tmp_path),  # type: ignore[arg-type]
        env={"LANWORKER_JOB_ID": "j1"},
        stdin=None,
        stdout=stdout,
        stderr=stderr,
        should_stop=should_stop,
    )
    result = executor.run(request)
    return result, stdout.tail_text(), stderr.tail_text()


@pytest.fixture(params=["pidfd", "no-pidfd"])
def pidfds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of seeing the leader exit: its pidfd, or (a kernel or seccomp profile
    without pidfd_open) asking for its status every 10 ms."""
    if request.param == "no-pidfd":

        def refused(pid: int, flags: int = 0) -> int:
            raise OSError(38, "Function not implemented")

        monkeypatch.setattr(os, "pidfd_open", refused)
    return str(request.param)


def test_output_and_exit_code(tmp_path: Path, pidfds: str) -> None:
    result, out, err = run(tmp_path, 'for i in 1 2 3; do echo "out $i"; echo "err $i" >&2; done; exit 7')
    assert result.exit_code == 7 and result.stop_reason is None
    assert out == "out 1\nout 2\nout 3\n" and err == "err 1\nerr 2\nerr 3\n"


def test_a_background_child_holding_stdout_cannot_keep_the_job_running(tmp_path: Path, pidfds: str) -> None:
    started = time.monotonic()
    result, out, _ = run(tmp_path, "sleep 60 & echo $! > bg.pid; echo done")
    assert result.exit_code == 0 and out == "done\n"
    assert time.monotonic() - started < 30  # not the background sleep's 60 s
    background = int((tmp_path / "bg.pid").read_text())
    deadline = time.monotonic() + 10
    while not dead(background) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dead(background)  # killed with its group


def dead(pid: int) -> bool:
    """Gone, or a zombie its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_stop_terminates_the_group(tmp_path: Path, pidfds: str) -> None:
    asked_at = time.monotonic() + 0.3

    def stop() -> StopReason | None:
        return StopReason.CANCELED if time.monotonic() >= asked_at else None

    result, out, _ = run(
        tmp_path, "trap 'echo term; exit 143' TERM; echo up; while :; do sleep 0.05; done", stop
    )
    assert result.stop_reason is StopReason.CANCELED
    assert result.exit_code == 128 + signal.SIGTERM and out == "up\nterm\n"
