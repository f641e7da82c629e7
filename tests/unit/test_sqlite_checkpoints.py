"""Writers restart the SQLite log themselves, every CHECKPOINT_EVERY_COMMITS commits, also
when readers are always about (lanworker/queues/sqlite.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from lanworker.queues import sqlite as lw_sqlite
from lanworker.queues.sqlite import (
    CHECKPOINT_EVERY_COMMITS,
    CHECKPOINT_RETRY_COMMITS,
    Connection,
    connect,
    immediate,
)

SCHEMA = "CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, pad TEXT NOT NULL);"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Connection]:
    with closing(connect(tmp_path / "q.db", SCHEMA)) as connection:
        yield connection


def commit(db: Connection, times: int) -> None:
    for _ in range(times):
        with immediate(db):
            db.execute("INSERT INTO rows (pad) VALUES (?)", ("x" * 200,))


def log_frames(db: Connection) -> int:
    """Frames in the log now, as another connection's passive checkpoint reports them."""
    path = db.execute("PRAGMA database_list").fetchone()[2]
    with closing(sqlite3.connect(path)) as other:
        frames: int = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        return frames


def rows(db: Connection) -> int:
    count: int = db.execute("SELECT count(*) FROM rows").fetchone()[0]
    return count


def test_the_log_starts_again_after_every_so_many_commits(db: Connection) -> None:
    commit(db, CHECKPOINT_EVERY_COMMITS - 1)
    assert log_frames(db) >= CHECKPOINT_EVERY_COMMITS - 1  # at least a page a commit
    commit(db, 1 + 3)  # the checkpoint, then three commits written from the log's head
    assert log_frames(db) <= 3 * 4
    assert rows(db) == CHECKPOINT_EVERY_COMMITS + 3


def test_a_reader_in_the_way_puts_the_restart_off_a_few_commits(db: Connection, tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "q.db", isolation_level=None)) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM rows").fetchone() == (0,)  # its snapshot: none yet
        commit(db, CHECKPOINT_EVERY_COMMITS)  # the checkpoint waits one busy step, then gives way
        reader.execute("COMMIT")
    commit(db, CHECKPOINT_RETRY_COMMITS - 1)
    assert log_frames(db) >= CHECKPOINT_EVERY_COMMITS  # not started again yet
    commit(db, 1 + 3)  # the checkpoint tried again, then three more
    assert log_frames(db) <= 3 * 4
    assert rows(db) == CHECKPOINT_EVERY_COMMITS + CHECKPOINT_RETRY_COMMITS + 3


def test_a_checkpoint_not_done_is_tried_again_a_few_commits_on(
    db: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried: list[int] = []

    def not_done(connection: sqlite3.Connection) -> bool:
        tried.append(rows(db))
        return False

    monkeypatch.setattr(lw_sqlite, "checkpoint", not_done)
    commit(db, CHECKPOINT_EVERY_COMMITS + 2 * CHECKPOINT_RETRY_COMMITS)
    every, retry = CHECKPOINT_EVERY_COMMITS, CHECKPOINT_RETRY_COMMITS
    assert tried == [every, every + retry, every + 2 * retry]


def test_a_checkpoint_that_raises_reports_not_done(tmp_path: Path) -> None:
    connection = connect(tmp_path / "q.db", SCHEMA)
    connection.close()  # from here every statement raises sqlite3.ProgrammingError
    assert lw_sqlite.checkpoint(connection) is False
