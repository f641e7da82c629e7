"""The systemd unit and Dockerfile agree with the worker's exit codes and grace period."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from lanworker.core import exitcodes as cli
from lanworker.core.config import WorkerConfig

ROOT = Path(__file__).resolve().parents[2]


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((ROOT / "api-worker.service").read_text())
    return parser


def test_unit_stop_timeout_outlasts_the_grace_period() -> None:
    service = unit()["Service"]
    grace = next(
        float(line.split("=", 2)[2])
        for line in (ROOT / "api-worker.service").read_text().splitlines()
        if line.startswith("Environment=LANWORKER_GRACE_PERIOD_S=")
    )
    assert grace == WorkerConfig.grace_period_s
    assert float(service["TimeoutStopSec"]) > grace
    assert service["KillMode"] == "mixed" and service["Restart"] == "always"


def test_unit_exit_codes_match_the_cli() -> None:
    service = unit()["Service"]
    assert str(cli.EXIT_CONFIG) in service["RestartPreventExitStatus"].split()
    assert str(cli.EXIT_STOPPED) in service["SuccessExitStatus"].split()
    assert "EnvironmentFile" in service


def test_dockerfile_is_non_root_exec_form_with_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert re.search(r"^ENTRYPOINT \[\"lanworker\"\]", text, re.M)
    assert (
        re.search(r"pip install .*--no-index", text) and "pip install -e" not in text
    )  # a wheel, not editable
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "LANWORKER_METRICS_PORT=9100" in text


def test_the_example_environment_allows_every_image_the_example_services_name() -> None:
    import fnmatch
    import json

    env = dict(
        line.split("=", 1)
        for line in (ROOT / "examples" / "worker.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    globs = [glob.strip() for glob in env["LANWORKER_ALLOW_IMAGE"].split(",")]
    services = json.loads((ROOT / "examples" / "services.json").read_text())["services"]
    for name, spec in services.items():
        assert any(fnmatch.fnmatchcase(spec["image"], glob) for glob in globs), (name, spec["image"])


def test_the_unit_installs_the_wheel_and_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    import pytest

    text = (ROOT / "api-worker.service").read_text()
    assert (
        ".[dev]" not in text and "pip install -e" not in text and "/opt/lanworker/venv/bin/lanworker" in text
    )
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    script = Path(sys.executable).parent / "lanworker"  # the console script the wheel installs
    assert script.exists(), "the lanworker console script is missing"
    unit_file = tmp_path / "api-worker.service"
    unit_file.write_text(text.replace("/opt/lanworker/venv/bin/lanworker", str(script)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        line for line in done.stderr.splitlines()
        if "api-worker.service" in line and "docker.service" not in line
    ]  # fmt: skip
    assert done.returncode == 0 or not problems, done.stderr
    assert not problems, done.stderr
