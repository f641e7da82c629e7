"""Run the CLI as a real subprocess, the way systemd or a shell would."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_PY = str(REPO_ROOT / "worker.py")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANWORKER_")}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, input_text: str | None = None, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, WORKER_PY, *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        input=input_text,
        timeout=timeout_s,
        cwd=REPO_ROOT,
    )


def start_cli(
    *args: str, env: dict[str, str] | None = None, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    log = log_path.open("ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(
        [sys.executable, WORKER_PY, *args], stdout=log, stderr=log, env=env or cli_env(), cwd=REPO_ROOT
    )


def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def answers(url: str) -> bool:
    """Whether url answers 200 now (a server coming up answers nothing, or not yet 200)."""
    import requests

    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
