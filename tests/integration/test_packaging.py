"""A wheel installed into a fresh venv outside the checkout validates messages and runs jobs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.processes import REPO_ROOT, cli_env


def test_the_wheel_works_outside_the_checkout(wheelhouse: tuple[Path, str], tmp_path: Path) -> None:
    wheels, build_output = wheelhouse
    assert "project.license" not in build_output  # no deprecation warning from setuptools
    assert [wheel.name for wheel in wheels.glob("lanworker-*.whl")]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "--no-index", "--find-links", str(wheels), "lanworker"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(REPO_ROOT / "examples" / "seed-message.json", elsewhere / "seed.json")
    lanworker = str(venv / "bin/lanworker")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [lanworker, *args], capture_output=True, text=True, cwd=elsewhere, env=cli_env(), timeout=120
        )

    validated = run("validate", "seed.json")
    assert validated.returncode == 0 and validated.stdout.strip() == "seed.json: ok", validated.stderr
    queue = f"local:{tmp_path / 'q.db'}#jobs"
    (elsewhere / "job.json").write_text(
        json.dumps(
            {
                "id": "from-the-wheel",
                "service": "echo",
                "command": {"arguments": [{"type": "parameter", "value": "hi"}], "stdout": {"type": "pipe"}},
            }
        )
    )
    assert run("submit", "--queue", queue, "job.json").returncode == 0
    results = f"local:{tmp_path / 'q.db'}#results"
    worked = run(
        "native",
        "--queue",
        queue,
        "--results",
        results,
        "--once",
        "--work-root",
        str(tmp_path / "w"),
        "--",
        "echo",
    )
    assert worked.returncode == 0, worked.stderr
    import lanworker.queues as queues

    [reply] = queues.LocalQueue(results).receive(1, 0, 30)
    result = json.loads(reply.body)
    assert (result["job_id"], result["state"], result["stdout"]["text"]) == (
        "from-the-wheel",
        "succeeded",
        "hi\n",
    )
