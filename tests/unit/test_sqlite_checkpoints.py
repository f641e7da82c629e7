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


def log_salt(tmp_path: Path) -> bytes:
    """The WAL header's first salt, which SQLite changes each time the log starts again from
    its head (https://www.sqlite.org/fileformat.html#the_write_ahead_log). Read from the
    file, so that looking changes nothing."""
    return (tmp_path / "q.db-wal").read_bytes()[16:20]


def rows(db: Connection) -> int:
    count: int = db.execute("SELECT count(*) FROM rows").fetchone()[0]
    return count


def test_the_log_starts_again_after_every_so_many_commits(db: Connection, tmp_path: Path) -> None:
    commit(db, CHECKPOINT_EVERY_COMMITS)  # the last one checkpoints after its commit
    salt = log_salt(tmp_path)
    commit(db, 1)  # the first write after a checkpoint starts the log again
    assert log_salt(tmp_path) != salt
    salt = log_salt(tmp_path)
    commit(db, CHECKPOINT_EVERY_COMMITS - 1)
    assert log_salt(tmp_path) == salt  # not before the next checkpoint
    assert rows(db) == 2 * CHECKPOINT_EVERY_COMMITS


def test_a_reader_in_the_way_puts_the_restart_off_a_few_commits(db: Connection, tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "q.db", isolation_level=None)) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM rows").fetchone() == (0,)  # its snapshot: none yet
        commit(db, CHECKPOINT_EVERY_COMMITS)  # the checkpoint waits one busy step, then gives way
        reader.execute("COMMIT")
    salt = log_salt(tmp_path)
    commit(db, CHECKPOINT_RETRY_COMMITS)  # the last one is the checkpoint tried again
    assert log_salt(tmp_path) == salt
    commit(db, 1)
    assert log_salt(tmp_path) != salt
    assert rows(db) == CHECKPOINT_EVERY_COMMITS + CHECKPOINT_RETRY_COMMITS + 1


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
