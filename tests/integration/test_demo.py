"""The README's first command: `make demo` runs scripts/demo.sh with the venv's python."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.processes import REPO_ROOT, cli_env


def test_demo_runs_every_example_on_the_embedded_queue(tmp_path) -> None:
    # A relative interpreter path, as `make demo` passes .venv/bin/python.
    python = os.path.relpath(sys.executable, REPO_ROOT)
    completed = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=cli_env(PY=python, HOME=str(tmp_path), TMPDIR=str(tmp_path)),
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count('"state": "succeeded"') == 2
    assert '"state": "listening"' in completed.stdout
    assert "(rejected, as it should be)" in completed.stdout
    assert (REPO_ROOT / "demo-output" / "seed-readme.wordfreq.json").exists()
