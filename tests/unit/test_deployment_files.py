"""The systemd unit and Dockerfile agree with the worker's exit codes and grace period."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from lanworker import exitcodes as cli
from lanworker.config import WorkerConfig

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
