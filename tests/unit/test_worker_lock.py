"""Worker id locks: a new lock file is never seen unlocked, a held one refuses a second
worker with that id, and a dead worker's file is taken over."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from lanworker.core.errors import ConfigError
from lanworker.loop.worker import lock_worker_id


def held_by_someone(path: Path) -> bool:
    with path.open("a") as probe:  # what a starting worker does to every *.lock
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True


def test_a_new_lock_file_appears_locked_and_refuses_a_twin(tmp_path: Path) -> None:
    handle = lock_worker_id(tmp_path, "w1")
    assert held_by_someone(tmp_path / "w1.lock")
    with pytest.raises(ConfigError, match="another worker with id 'w1'"):
        lock_worker_id(tmp_path, "w1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1.lock"]  # no temporary left
    handle.close()


def test_a_dead_workers_lock_file_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "w2.lock").write_text("")
    handle = lock_worker_id(tmp_path, "w2")
    assert held_by_someone(tmp_path / "w2.lock")
    handle.close()
