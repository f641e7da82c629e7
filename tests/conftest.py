"""Shared fixtures: a clean LANWORKER_* environment and factories that clean up after themselves."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lanworker.queues import LocalQueue

REPO_ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.helpers.aws_fixtures",
    "tests.helpers.docker_fixtures",
    "tests.helpers.packaging",
    "tests.helpers.serve_fixtures",
]


@pytest.fixture(autouse=True)
def clean_lanworker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LANWORKER_* settings must never change what a test sees."""
    for name in list(os.environ):
        if name.startswith("LANWORKER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def local_queue_factory(tmp_path: Path) -> Iterator[Callable[..., LocalQueue]]:
    made: list[LocalQueue] = []

    def make(name: str = "jobs", max_receives: int = 5) -> LocalQueue:
        queue = LocalQueue(f"local:{tmp_path / 'queue.db'}#{name}", max_receives=max_receives)
        made.append(queue)
        return queue

    yield make
    (tmp_path / "queue.db").unlink(missing_ok=True)


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    root = tmp_path / "work"
    root.mkdir()
    return root


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.helpers.faults import SUMMARIES

    if SUMMARIES:
        terminalreporter.section("fault injection")
        for line in SUMMARIES:
            terminalreporter.write_line(line)
    screenshots = REPO_ROOT / "test-artifacts" / "screenshots"
    if screenshots.is_dir() and any(screenshots.iterdir()):
        terminalreporter.section("status view screenshots")
        terminalreporter.write_line(
            f"{screenshots}: " + ", ".join(sorted(p.name for p in screenshots.iterdir()))
        )
