"""A wheelhouse of the project and its dependencies, built once per session by pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import REPO_ROOT


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """(directory of wheels, pip's output while building the project's own wheel)."""
    directory = tmp_path_factory.mktemp("wheels")
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--wheel-dir", str(directory), str(REPO_ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return directory, completed.stdout + completed.stderr
