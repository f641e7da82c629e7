"""SQLite as lanworker uses it (the embedded queue, the task store): WAL mode, and writers
serialised by IMMEDIATE transactions, so several processes can share one file safely.

Each connection runs a RESTART checkpoint after every CHECKPOINT_EVERY_COMMITS of its
commits: it waits (one busy step) for the readers to move on, so that the log starts again
from its head. SQLite's automatic checkpoint, alone, starved: with several processes always
inside a transaction the log could never start again, it grew past its 1,000 pages, and
from then on every commit ran a checkpoint with two fsyncs (1.3 fsyncs a job in the
per-job benchmark; 0.03 with these checkpoints). A PASSIVE checkpoint in their place does
not wait, and the log grew to 11,000 pages. SQLite's stays as the backstop, at
AUTO_CHECKPOINT_PAGES, for a file whose writers never reach CHECKPOINT_EVERY_COMMITS.

Within a process the embedded queue uses one `SharedConnection` per file for all threads
and all named queues in it, one statement group at a time: per-thread connections each
re-read the pages another connection changed after every transaction, which cost more
than the transactions themselves.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

LOCK_WAIT_S = 30.0  # the longest a writer waits for another process's transaction
BUSY_STEP_MS = 5  # sqlite's own wait per attempt; its sleeps start at 1 ms each attempt
CHECKPOINT_EVERY_COMMITS = 200  # per connection: a few hundred pages of log
CHECKPOINT_RETRY_COMMITS = 10  # after a checkpoint that found a reader in its way
AUTO_CHECKPOINT_PAGES = 10_000  # SQLite's own checkpoint, the backstop: 40 MB of log


class Connection(sqlite3.Connection):
    """A connection that counts its commits towards its next checkpoint."""

    commits = 0


def connect(path: Path, schema: str, check_same_thread: bool = True) -> Connection:
    """An autocommit connection (transactions are explicit), with the schema created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(
        path,
        timeout=LOCK_WAIT_S,
        isolation_level=None,
        check_same_thread=check_same_thread,
        factory=Connection,
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.executescript(schema)
    # From here on writers wait in short steps (begin_immediate): sqlite's own busy handler
    # backs off to 100 ms sleeps, which left processes sharing a file asleep long after the
    # lock they wanted was free.
    connection.execute(f"PRAGMA busy_timeout={BUSY_STEP_MS}")
    connection.execute(f"PRAGMA wal_autocheckpoint={AUTO_CHECKPOINT_PAGES}")
    return connection


def begin_immediate(connection: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, tried again every BUSY_STEP_MS or so for up to LOCK_WAIT_S."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise


@contextmanager
def immediate(connection: Connection) -> Iterator[Connection]:
    """One write transaction, taken at once (no upgrade deadlock), rolled back on any error."""
    begin_immediate(connection)
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    connection.commits += 1
    if connection.commits >= CHECKPOINT_EVERY_COMMITS:
        connection.commits = (
            0 if checkpoint(connection) else CHECKPOINT_EVERY_COMMITS - CHECKPOINT_RETRY_COMMITS
        )


def checkpoint(connection: sqlite3.Connection) -> bool:
    """A RESTART checkpoint; False when a reader (or another checkpoint) was in its way.
    It never fails the transaction committed before it."""
    try:
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    except sqlite3.Error:
        return False
    return not busy


@contextmanager
def savepoint(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A part of the open transaction that an error undoes alone."""
    connection.execute("SAVEPOINT joined")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK TO joined")
        connection.execute("RELEASE joined")
        raise
    connection.execute("RELEASE joined")


class SharedConnection:
    """One connection to one file for every thread of the process; users take turns."""

    _open: ClassVar[weakref.WeakValueDictionary[str, SharedConnection]] = weakref.WeakValueDictionary()
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._holder: int | None = None  # the thread inside transaction() now

    @classmethod
    def to(
        cls, path: Path, schema: str, prepare: Callable[[sqlite3.Connection], None] | None = None
    ) -> SharedConnection:
        """The process's connection to path, opened (schema, then prepare) on first use.
        It lives as long as someone holds it."""
        key = os.path.realpath(path)
        with cls._registry_lock:
            shared = cls._open.get(key)
            if shared is None:
                connection = connect(path, schema, check_same_thread=False)
                if prepare is not None:
                    with immediate(connection):
                        prepare(connection)
                shared = cls._open[key] = cls(connection)
            return shared

    @contextmanager
    def transaction(self, one_statement: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction. Entered again by the thread already inside one, it joins
        that one as a savepoint: the inner part rolls back alone on an error and commits
        with the outer one. An inner part of one statement needs no savepoint (SQLite
        undoes a failed statement by itself), so it is simply run in the outer one."""
        if self._holder == threading.get_ident():
            if one_statement:
                yield self._connection
                return
            with savepoint(self._connection) as connection:
                yield connection
            return
        with self._lock:
            self._holder = threading.get_ident()
            try:
                with immediate(self._connection) as connection:
                    yield connection
            finally:
                self._holder = None

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        if self._holder == threading.get_ident():
            yield self._connection  # inside this thread's own transaction
            return
        with self._lock:
            yield self._connection
